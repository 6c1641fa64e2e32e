package loop_test

import (
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"testing"

	"github.com/gorilla/websocket"

	"switchboard/loop"
)

// With one read worker and a one-slot queue, a burst from many phones
// overflows the queue: the overflow is counted, and every frame still
// reaches its binary once and in each phone's order.
func TestRoutingWithReadQueueAtItsBound(t *testing.T) {
	r := startRelay(t, loop.Config{ReadWorkers: 1, ReadQueueDepth: 1})
	const binaries, phonesPer, msgs = 4, 16, 40
	envRE := regexp.MustCompile(`^\{"conn_id":"([^"]+)","frame":\{"seq":([0-9]+)\}\}$`)
	for round := 0; ; round++ {
		bs := make([]*peer, binaries)
		var phones []*peer
		for i := range bs {
			id := fmt.Sprintf("rq-%d-%d", round, i)
			bs[i] = r.binary(t, id)
			for range phonesPer {
				phones = append(phones, r.phone(t, id))
			}
		}
		var wg sync.WaitGroup
		for _, p := range phones {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range msgs {
					if err := p.conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"seq":%d}`, k)); err != nil {
						t.Errorf("phone send: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		for _, b := range bs {
			next := map[string]int{}
			for range phonesPer * msgs {
				m := envRE.FindStringSubmatch(string(b.next(t)))
				if m == nil {
					t.Fatal("envelope not as sent")
				}
				seq, _ := strconv.Atoi(m[2])
				if seq != next[m[1]] {
					t.Fatalf("%s: got seq %d, want %d", m[1], seq, next[m[1]])
				}
				next[m[1]]++
			}
			if len(next) != phonesPer {
				t.Fatalf("binary heard %d phones, want %d", len(next), phonesPer)
			}
		}
		if scrape(t, r)["switchboard_read_tasks_spilled_total"] > 0 {
			return
		}
		if round == 9 {
			t.Fatal("10 bursts of 64 phones never overflowed a one-slot read queue")
		}
	}
}
