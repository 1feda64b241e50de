package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// benchBurst: N sessions (--sessions, default 200) are created, one per
// charger, and then confirmed by their users all at once. The figure is
// confirm→start received at the charger, p99 (p50 and the engine's own
// confirm→start sent beside it in extra); the baseline is the same broker's
// publish→receive p99 for N QoS 1 messages, in the same run. See
// docs/bench.md.
// burstSessions is the burst scenario's --sessions by default.
const burstSessions = 200

func benchBurst(ctx context.Context, b *bench) {
	n := b.sessionsOr(burstSessions)
	startStacks(b, "burst", func(row string, o rigOptions) {
		if err := b.burstRow(ctx, row, n, o); err != nil {
			b.fail(row, err)
		}
	})
}

// benchCreateWidth is how many sessions the start scenarios create at once
// before the measured moment (the burst's confirmations).
const benchCreateWidth = 32

func (b *bench) burstRow(ctx context.Context, row string, n int, o rigOptions) error {
	sw := newStartWatch()
	o.chargers, o.connectors, o.meterInterval, o.onCommand = n, 1, 30*time.Second, sw.onCommand
	r, err := newEngineRig(ctx, b, o)
	if err != nil {
		return fmt.Errorf("set-up: %w", err)
	}
	defer r.close()
	chargers := r.fleet.Chargers()

	ids, orders := make([]string, n), make([]string, n)
	var next atomic.Int64
	errs := make(chan error, benchCreateWidth)
	var wg sync.WaitGroup
	for range benchCreateWidth {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				id, order, err := r.openSession(ctx, sw, chargers[i], 1, fmt.Sprintf("bench-burst-%d", i))
				if err != nil {
					errs <- err
					return
				}
				ids[i], orders[i] = id, order
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}

	sentFrom := len(r.engineStartSent(0))
	confirmed := make([]time.Time, n)
	gate := make(chan struct{})
	var confirmErr atomic.Value
	for i := range n {
		wg.Go(func() {
			<-gate
			confirmed[i] = time.Now()
			if err := r.sb.Confirm(orders[i]); err != nil {
				confirmErr.CompareAndSwap(nil, fmt.Errorf("confirm %s: %w", ids[i], err))
			}
		})
	}
	endProfile, err := b.prof.window()
	if err != nil {
		return err
	}
	close(gate)
	wg.Wait()
	if err, _ := confirmErr.Load().(error); err != nil {
		_ = endProfile()
		return err
	}
	var got, notified []time.Duration
	missed := 0
	deadline := time.Now().Add(60 * time.Second)
	arrived := make([]time.Time, n)
	for i, id := range ids {
		at, ok := sw.wait(ctx, id, deadline)
		if !ok {
			missed++
			continue
		}
		arrived[i] = at
		got = append(got, at.Sub(confirmed[i]))
	}
	if err := endProfile(); err != nil {
		return err
	}
	if len(got) == 0 {
		return fmt.Errorf("no start reached a charger within 60s of %d confirmations", n)
	}
	// The same starts from the engine's receipt of the verified
	// notification (the session's confirmed_at): without the sandbox's RSA
	// signing of each notification, which is Huifu's work, not ours.
	for i, id := range ids {
		if arrived[i].IsZero() {
			continue
		}
		s, err := r.st.GetSession(ctx, id)
		if err != nil {
			return fmt.Errorf("read %s: %w", id, err)
		}
		notified = append(notified, arrived[i].Sub(s.ConfirmedAt))
	}
	base, err := r.brokerLatency(ctx, n)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	// After the baseline: an Observer call can follow its start's arrival.
	sent := r.engineStartSent(sentFrom)
	b.emitStartRow(row, got, sent, base, missed, map[string]float64{"sessions": float64(n)},
		fmt.Sprintf("%d sessions confirmed at once", n), notified)
	return nil
}

// emitStartRow prints a start scenario's row: confirm→start received p99
// beside the broker's publish→receive p99, the p50s and the engine's own
// confirm→start sent in extra and notes; and, when notified is given, the
// start received from the engine's receipt of the notification.
func (b *bench) emitStartRow(row string, got, sent, base []time.Duration, missed int, extra map[string]float64, what string, notified []time.Duration) {
	g50, g99 := percentile(got, 0.50), percentile(got, 0.99)
	s50, s99 := percentile(sent, 0.50), percentile(sent, 0.99)
	b50, b99 := percentile(base, 0.50), percentile(base, 0.99)
	extra["confirm_to_start_received_p50_ms"], extra["confirm_to_start_received_p99_ms"] = ms(g50), ms(g99)
	extra["engine_confirm_to_start_sent_p50_ms"], extra["engine_confirm_to_start_sent_p99_ms"] = ms(s50), ms(s99)
	extra["broker_pub_to_recv_p50_ms"], extra["broker_pub_to_recv_p99_ms"] = ms(b50), ms(b99)
	extra["missed_start"] = float64(missed)
	extra["engine_starts_sent"] = float64(len(sent))
	if len(notified) > 0 {
		n50, n99 := percentile(notified, 0.50), percentile(notified, 0.99)
		extra["notified_to_start_received_p50_ms"], extra["notified_to_start_received_p99_ms"] = ms(n50), ms(n99)
		what += fmt.Sprintf("; notification received→start at charger p50 %.1fms p99 %.1fms", ms(n50), ms(n99))
	}
	b.emit(benchRow{Scenario: row, Figure: ms(g99), Unit: "ms p99 confirm→start at charger", Ops: int64(len(got)),
		Baseline: ms(b99), BaselineUnit: "ms p99 broker pub→recv QoS 1 (same broker)", BaselineOps: int64(len(base)),
		Extra: extra,
		Notes: fmt.Sprintf("%s; confirm→start at charger p50 %.1fms p99 %.1fms (engine's confirm→start sent p50 %.1fms p99 %.1fms); broker p50 %.2fms p99 %.2fms; %d missed their start",
			what, ms(g50), ms(g99), ms(s50), ms(s99), ms(b50), ms(b99), missed)})
}
