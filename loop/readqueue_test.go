package loop_test

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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

// A binary that sends without pause keeps its read task, and so a read
// worker, busy for as long as it sends (netpoll runs a connection's task
// until its input is drained). With a single read worker, the stall bound
// must still let another pair's round trips through. Without it the calm
// pair starves outright (its tasks wait behind the flood's for as long as
// the flood lasts); with it, round trips take milliseconds, or about a
// second under -race, where the flooding client shares the test's two cores.
func TestPeersSendingWithoutPauseDoNotStarveOthers(t *testing.T) {
	r := startRelay(t, loop.Config{ReadWorkers: 1})
	pair := newRTPair(t, r, "calm")
	// Envelopes to a conn_id that does not exist: each is parsed and
	// dropped, so the flood costs the relay CPU and never backs up.
	envelope := fmt.Appendf(nil, `{"conn_id":"nobody","frame":{"pad":%q}}`, strings.Repeat("p", 1<<10))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 1 {
		b := r.binary(t, fmt.Sprintf("flood-%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := b.conn.WriteMessage(websocket.TextMessage, envelope); err != nil {
					t.Errorf("flooding binary: %v", err)
					return
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	waitFor(t, "the flood under way", func() bool { return r.Counters().Drop(loop.DropUnknownConnID) > 1000 })

	var worst time.Duration
	for i := range 30 {
		worst = max(worst, pair.roundTrip(t, i))
	}
	t.Logf("worst of 30 round trips beside a flooding binary, 1 read worker: %v; %d dropped envelopes, %d rescues",
		worst, r.Counters().Drop(loop.DropUnknownConnID), scrape(t, r)["switchboard_read_task_rescues_total"])
	if worst > 5*time.Second {
		t.Fatalf("a round trip took %v beside the flood", worst)
	}
}
