package main

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"switchboard/internal/wsclient"
)

// The flooders and receivers of each --scenario: binaries flooding one
// reading phone each (binaries-to-phones), or phones flooding binaries that
// read (phones-to-binary) or never do (deaf-binary).

// setupBinariesToPhones connects N binaries, each with one reading phone;
// each binary floods envelopes addressed to its phone.
func (f *flood) setupBinariesToPhones(ctx context.Context) int {
	n := f.cfg.Flooders
	var ok atomic.Int64
	var wg sync.WaitGroup
	pace(ctx, f.cfg.ConnectRate/2, n, f.stopCh, func(i int) bool {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f.setupBinaryFlooder(i) {
				ok.Add(1)
			}
		}()
		return true
	})
	wg.Wait()
	return int(ok.Load())
}

func (f *flood) setupBinaryFlooder(i int) bool {
	id := f.serverID("f", i)
	b, err := f.dial(id, false)
	if err != nil {
		f.connFails.add("binary_"+dialKind(err), 1)
		return false
	}
	p, err := f.dialPhone(id)
	if err != nil {
		f.connFails.add(dialKind(err), 1)
		return false
	}
	// The phone says hello so the binary learns its conn_id.
	_ = p.Conn.SetDeadline(time.Now().Add(f.cfg.ReplyTimeout))
	_ = b.Conn.SetDeadline(time.Now().Add(f.cfg.ReplyTimeout))
	if err := p.WriteText([]byte(`{"hello":1}`)); err != nil {
		f.connFails.add("hello_write_"+ioKind(err), 1)
		return false
	}
	_, env, err := b.ReadFrame()
	if err != nil {
		f.connFails.add("binary_hello_"+readKind(err, env), 1)
		return false
	}
	cid, ok := envelopeConnID(env)
	if !ok {
		f.errs.add("bad_envelope", 1)
		return false
	}
	_ = p.Conn.SetDeadline(time.Time{})
	_ = b.Conn.SetDeadline(time.Time{})
	// {"conn_id":"<cid>","frame":{"p":"<pad>"}} of exactly --size bytes.
	head := `{"conn_id":"` + cid + `","frame":`
	innerLen := f.cfg.Size - len(head) - 1
	if innerLen < 8 {
		f.errs.add("size_below_envelope", 1)
		return false
	}
	inner := make([]byte, 0, innerLen)
	inner = append(inner, `{"p":"`...)
	inner = append(inner, padAlphabet[:innerLen-8]...)
	inner = append(inner, `"}`...)
	msg := append(append([]byte(head), inner...), '}')
	frame := wsclient.AppendMasked(nil, wsclient.OpText, msg)

	pw := f.watch(p, func(b []byte) {
		if !bytes.Equal(b, inner) {
			f.errs.add("flood_frame_mismatch", 1)
			return
		}
		f.recv.Add(1)
		f.recvBytes.Add(int64(len(b)))
	})
	go func() {
		<-pw.done
		if pw.kind != "" && !(f.stopping.Load() && pw.kind == "timeout") {
			f.receiverDisc.add(pw.kind, 1)
		}
	}()
	bw := f.watch(b, nil) // close notices and pings
	f.trackFlooder(b, true)
	f.writers.Add(1)
	go func() {
		defer f.writers.Done()
		err := f.floodWrite(b, frame, len(msg))
		f.flooderEnded(bw, err)
	}()
	return true
}

// envelopeConnID reads the conn_id of a relay→binary frame envelope.
func envelopeConnID(p []byte) (string, bool) {
	const head = `{"conn_id":"`
	if !bytes.HasPrefix(p, []byte(head)) {
		return "", false
	}
	end := bytes.IndexByte(p[len(head):], '"')
	if end <= 0 {
		return "", false
	}
	return string(p[len(head) : len(head)+end]), true
}

// setupPhonesToBinary connects ceil(N/--phones-per-binary) binaries, reading
// (phones-to-binary) or deaf, then N phone flooders spread over them. It
// returns how many phones and binaries connected.
func (f *flood) setupPhonesToBinary(ctx context.Context, deaf bool) (phones, binaries int) {
	per := f.cfg.PhonesPerBinary
	nb := binariesFor(f.cfg.Flooders, per)
	ids := make([]string, nb)
	up := make([]bool, nb)
	for j := range nb {
		ids[j] = f.serverID("r", j)
		b, err := f.dial(ids[j], false)
		if err != nil {
			f.connFails.add("binary_"+dialKind(err), 1)
			continue
		}
		up[j] = true
		binaries++
		if deaf {
			continue // completes the handshake, never reads
		}
		bw := f.watch(b, func(p []byte) {
			if isCloseNotice(p) {
				return
			}
			// {"conn_id":"…","frame":<exactly the phone's --size bytes>}
			cid, ok := envelopeConnID(p)
			inner := len(p) - len(`{"conn_id":"","frame":}`) - len(cid)
			if !ok || inner != f.cfg.Size || p[len(p)-1] != '}' {
				f.errs.add("flood_frame_mismatch", 1)
				return
			}
			f.recv.Add(1)
			f.recvBytes.Add(int64(inner))
		})
		go func() {
			<-bw.done
			if bw.kind != "" && !(f.stopping.Load() && bw.kind == "timeout") {
				f.receiverDisc.add("binary_"+bw.kind, 1)
			}
		}()
	}
	ok := 0
	pace(ctx, f.cfg.ConnectRate, f.cfg.Flooders, f.stopCh, func(i int) bool {
		if !up[i/per] {
			return true
		}
		p, err := f.dialPhone(ids[i/per])
		if err != nil {
			f.connFails.add(dialKind(err), 1)
			return true
		}
		ok++
		f.writers.Add(1)
		go func() {
			defer f.writers.Done()
			f.phoneFlooder(int64(i), ids[i/per], p)
		}()
		return true
	})
	return ok, binaries
}

// phoneFlooder floods from one phone slot; when the relay disconnects it
// during the window, it dials again after a pause (bounded by the window
// and maxRedials).
func (f *flood) phoneFlooder(id int64, serverID string, p *wsclient.Client) {
	msg := appendPayload(nil, id, 1, f.cfg.Size)
	frame := wsclient.AppendMasked(nil, wsclient.OpText, msg)
	for try := 0; ; try++ {
		w := f.watch(p, nil)
		f.trackFlooder(p, true)
		if f.stopping.Load() {
			_ = p.Conn.SetWriteDeadline(time.Now().Add(f.cfg.Drain))
		}
		err := f.floodWrite(p, frame, len(msg))
		f.trackFlooder(p, false)
		f.flooderEnded(w, err)
		if err == nil || f.stopping.Load() || try >= maxRedials || !f.sleep(redialPause) {
			return
		}
		np, derr := f.dialPhone(serverID)
		if derr != nil {
			if !f.stopping.Load() {
				f.connFails.add("redial_"+dialKind(derr), 1)
			}
			return
		}
		f.redials.Add(1)
		p = np
	}
}
