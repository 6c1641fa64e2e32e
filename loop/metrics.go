package loop

import (
	"io"
	"strconv"
)

// WriteMetrics writes the relay's metrics in the Prometheus text format
// (with # HELP and # TYPE lines). The pyrycode_relay_* families keep the
// reference relay's names and labels so existing dashboards work; the
// switchboard_* families are what an operator of an event loop needs on top.
// No label ever carries a server-id, token or header value: every label
// value comes from a fixed set of names in this package.
//
// Everything read here is an atomic the hot path already maintains, so
// scraping costs the relay nothing between scrapes.
func (s *Server) WriteMetrics(w io.Writer) error {
	c := &s.counters
	m := metricWriter{b: make([]byte, 0, 16<<10)}

	m.family("pyrycode_relay_connected_binaries", "gauge", "Server-ids held by a connected binary (slots in their grace window excluded).")
	m.value("", uint64(s.reg.Binaries()))
	m.family("pyrycode_relay_connected_phones", "gauge", "Phones attached to a server-id (grace-window slots included).")
	m.value("", uint64(s.reg.Phones()))
	m.family("pyrycode_relay_frames_forwarded_total", "counter", "Frames queued to their destination, by direction.")
	m.value(`direction="phone_to_binary"`, c.PhoneToBinary.Load())
	m.value(`direction="binary_to_phone"`, c.BinaryToPhone.Load())
	m.family("pyrycode_relay_grace_expiries_total", "counter", "Grace windows that ended without the binary reclaiming its server-id.")
	m.value("", c.GraceExpiries.Load())
	m.family("pyrycode_relay_ws_upgrade_attempts_total", "counter", "Upgrade attempts on /v1/server and /v1/client, by outcome.")
	for e, endpoint := range endpointNames {
		for o := UpgradeOutcome(0); o < numUpgradeOutcomes; o++ {
			m.value(`endpoint="`+endpoint+`",outcome="`+o.String()+`"`, c.Upgrades[e][o].Load())
		}
	}
	m.family("pyrycode_relay_register_failures_total", "counter", "Registrations refused, by kind.")
	m.value(`kind="no_server"`, c.Upgrades[EndpointClient][UpgradeReject404].Load())
	m.value(`kind="server_in_use"`, c.Upgrades[EndpointServer][UpgradeReject409].Load())
	m.value(`kind="phones_at_cap"`, c.Upgrades[EndpointClient][UpgradeReject429].Load())
	m.value(`kind="ratelimit"`, c.Upgrades[EndpointServer][UpgradeRejectRateLimit].Load()+c.Upgrades[EndpointClient][UpgradeRejectRateLimit].Load())
	m.family("pyrycode_relay_push_wakes_total", "counter", "Push wake requests from binaries, by outcome (dropped: refused at admission, push off included).")
	push := [...]struct {
		name string
		n    uint64
	}{{"sent", 0}, {"unregistered", 0}, {"send_failed", 0}, {"token_fetch_failed", 0}, {"dropped", c.Drops[DropPushWakeOff].Load()}}
	if s.cfg.Push != nil {
		s.cfg.Push.Outcomes(func(name string, n uint64) {
			for i := range push {
				if push[i].name == name {
					push[i].n += n
				}
			}
		})
	}
	for _, p := range push {
		m.value(`outcome="`+p.name+`"`, p.n)
	}

	m.family("switchboard_live_connections", "gauge", "Upgraded WebSocket connections open, both roles.")
	m.value("", uint64(max(s.live.Load(), 0)))
	m.family("switchboard_max_connections", "gauge", "The --max-connections cap.")
	m.value("", uint64(s.cfg.MaxConnections))
	m.family("switchboard_drops_total", "counter", "Frames or envelopes not delivered, by reason.")
	for r := DropReason(0); r < numDropReasons; r++ {
		m.value(`reason="`+r.String()+`"`, c.Drops[r].Load())
	}
	m.family("switchboard_closes_total", "counter", "Connections closed by the relay or by the peer's close frame, by reason.")
	for r := CloseReason(0); r < numCloseReasons; r++ {
		m.value(`reason="`+r.String()+`"`, c.Closes[r].Load())
	}
	m.family("switchboard_rejects_total", "counter", "Requests answered without an upgrade (handshake failures), by reason.")
	for r := RejectReason(0); r < numRejectReasons; r++ {
		m.value(`reason="`+r.String()+`"`, c.Rejects[r].Load())
	}
	m.family("switchboard_outbox_bytes", "gauge", "Bytes queued towards peers (outbound), charged as frame length + 64 per frame.")
	m.value("", uint64(max(c.OutboxBytesQueued.Load(), 0)))
	m.family("switchboard_staged_bytes", "gauge", "Bytes of incomplete request heads, frames and fragmented messages held (inbound).")
	m.value("", uint64(max(c.StagedBytes.Load(), 0)))
	m.family("switchboard_read_tasks_queued", "gauge", "Read tasks (a socket's new input to parse and route) waiting for a read worker.")
	m.value("", uint64(s.tasks.Queued()))
	m.family("switchboard_read_tasks_spilled_total", "counter", "Read tasks run on a goroutine of their own because the read queue (--read-queue-depth) was full.")
	m.value("", s.tasks.Spilled())
	m.family("switchboard_read_task_rescues_total", "counter", "Read tasks that started a rescuer goroutine because every read worker had been busy past --read-stall-after with tasks waiting (peers that send without pause).")
	m.value("", s.tasks.Rescues())
	m.family("switchboard_writers_active", "gauge", "Connections with a writer flushing right now: a sustained high value means peers read slower than they are sent to.")
	m.value("", uint64(max(c.WritersActive.Load(), 0)))
	m.family("switchboard_flushes_total", "counter", "Writes (one writev each) by outbox writers; frames_flushed_total / flushes_total is how well writes coalesce.")
	m.value("", c.Flushes.Load())
	m.family("switchboard_frames_flushed_total", "counter", "Frames carried by those writes.")
	m.value("", c.FramesFlushed.Load())
	m.family("switchboard_unread_bytes", "gauge", "Input netpoll has read from sockets and the read side has not taken yet (inbound).")
	m.value("", uint64(max(c.UnreadBytes.Load(), 0)))
	m.family("switchboard_buffered_bytes", "gauge", "All bytes held in connection buffers: unread + staged + outbox, what --memory-budget-bytes bounds.")
	m.value("", uint64(max(s.budget.held(), 0)))
	m.family("switchboard_memory_budget_bytes", "gauge", "The --memory-budget-bytes limit (0: off); refusing and pausing start at 80% of it.")
	m.value("", uint64(max(s.cfg.MemoryBudgetBytes, 0)))
	m.family("switchboard_read_pauses_total", "counter", "Sockets whose reading paused (TCP backpressure on the sender), by reason.")
	for r := PauseReason(1); r < numPauseReasons; r++ {
		m.value(`reason="`+r.String()+`"`, c.Pauses[r].Load())
	}
	m.family("switchboard_read_paused", "gauge", "Sockets paused right now: read by the relay at the pace it parses.")
	m.value("", uint64(max(c.PausedNow.Load(), 0)))
	m.family("switchboard_phone_parks_total", "counter", "Times a phone stopped reading because its binary's outbox was more than half full (it reads again at a quarter).")
	m.value("", c.Parks.Load())
	m.family("switchboard_direct_read_bytes_total", "counter", "Bytes the relay read itself from paused sockets.")
	m.value("", c.DirectReadBytes.Load())
	m.family("switchboard_write_waits_total", "counter", "Writes that found the peer's socket full and waited for room (slow readers).")
	m.value("", c.WriteWaits.Load())
	m.family("switchboard_rate_limit_exempt_total", "counter", "Upgrade attempts the per-IP rate limit did not count because their source is in --rate-limit-exempt.")
	m.value("", c.RateLimitExempt.Load())
	m.family("switchboard_outbox_wait_seconds", "histogram", "Time a frame waited in its outbox, from its push to the start of the write that carried it (latency.go has why these buckets).")
	m.histogram("", outboxWaitBounds, &c.outboxWait)
	m.family("switchboard_upgrade_duration_seconds", "histogram", "Time from the first byte of a request head on /v1/server or /v1/client to its 101 or refusal being written, by endpoint.")
	for e, endpoint := range endpointNames {
		m.histogram(`endpoint="`+endpoint+`"`, upgradeBounds, &c.upgradeTime[e])
	}
	m.family("switchboard_takeover_probes_total", "counter", "Duplicate claims that pinged the holder.")
	m.value("", c.TakeoverProbes.Load())
	m.family("switchboard_takeovers_total", "counter", "Takeover probes the holder did not answer: the server-id moved.")
	m.value("", c.Takeovers.Load())
	_, err := w.Write(m.b)
	return err
}

type metricWriter struct {
	b    []byte
	name string
}

func (m *metricWriter) family(name, typ, help string) {
	m.name = name
	m.b = append(m.b, "# HELP "...)
	m.b = append(m.b, name...)
	m.b = append(m.b, ' ')
	m.b = append(m.b, help...)
	m.b = append(m.b, "\n# TYPE "...)
	m.b = append(m.b, name...)
	m.b = append(m.b, ' ')
	m.b = append(m.b, typ...)
	m.b = append(m.b, '\n')
}

func (m *metricWriter) value(labels string, v uint64) {
	m.b = append(m.b, m.name...)
	if labels != "" {
		m.b = append(m.b, '{')
		m.b = append(m.b, labels...)
		m.b = append(m.b, '}')
	}
	m.b = append(m.b, ' ')
	m.b = strconv.AppendUint(m.b, v, 10)
	m.b = append(m.b, '\n')
}
