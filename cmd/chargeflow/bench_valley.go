package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/chargeflow/chargeflow/charger/sim"
)

// valleyConnectors is the connectors of each charger in the valley
// scenario: S sessions need S free connectors, and S/10 chargers register
// and connect in seconds where S chargers would take minutes.
const valleyConnectors = 10

// valleyStartTimeout is the machine's start timeout in the valley scenario
// (a short one, as the figures in docs/bench.md were taken with): a session
// whose start has not reached its charger by then missed it.
const valleyStartTimeout = 8 * time.Second

// benchValley: S sessions (--sessions, default 3000) created and confirmed
// at R a second (--rate, default 200), open loop, on a fleet that stays
// online (the moment a valley tariff period begins). The figure is
// confirm→start received at the charger, p99; how many missed their start
// (none within the start timeout) is in extra and the notes; the baseline
// is the same broker's publish→receive p99 for S QoS 1 messages. See
// docs/bench.md.
// valleySessions is the valley scenario's --sessions by default.
const valleySessions = 3000

func benchValley(ctx context.Context, b *bench) {
	s := b.sessionsOr(valleySessions)
	startStacks(b, "valley", func(row string, o rigOptions) {
		if err := b.valleyRow(ctx, row, s, b.rate, o); err != nil {
			b.fail(row, err)
		}
	})
}

func (b *bench) valleyRow(ctx context.Context, row string, s, rate int, o rigOptions) error {
	sw := newStartWatch()
	o.chargers = (s + valleyConnectors - 1) / valleyConnectors
	o.connectors, o.meterInterval, o.startTimeout, o.onCommand = valleyConnectors, 30*time.Second, valleyStartTimeout, sw.onCommand
	r, err := newEngineRig(ctx, b, o)
	if err != nil {
		return fmt.Errorf("set-up: %w", err)
	}
	defer r.close()
	chargers := r.fleet.Chargers()
	sentFrom := len(r.engineStartSent(0))

	var mu sync.Mutex
	var got []time.Duration
	var missed, failed int
	var firstErr error
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	began := time.Now()
	var wg sync.WaitGroup
	for i := range s {
		if i > 0 {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			d, ok, err := r.valleySession(ctx, sw, chargers[i/valleyConnectors], i)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				failed++
				if firstErr == nil {
					firstErr = err
				}
			case ok:
				got = append(got, d)
			default:
				missed++
			}
		})
	}
	offered := time.Since(began)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if firstErr != nil {
		b.log.Warn("bench: valley sessions failed before their confirmation", "row", row, "failed", failed, "first", firstErr)
	}
	if len(got) == 0 {
		return fmt.Errorf("no start reached a charger within %s of its confirmation (%d missed, %d failed: %v)", valleyStartTimeout, missed, failed, firstErr)
	}
	base, err := r.brokerLatency(ctx, s)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	// After the baseline: an Observer call can follow its start's arrival.
	sent := r.engineStartSent(sentFrom)
	b.emitStartRow(row, got, sent, base, missed,
		map[string]float64{"sessions": float64(s), "rate_per_s": float64(rate), "offered_s": offered.Seconds(),
			"failed_before_confirm": float64(failed), "chargers": float64(o.chargers), "start_timeout_s": valleyStartTimeout.Seconds()},
		fmt.Sprintf("%d sessions created and confirmed at %d/s (offered in %.1fs) on %d chargers × %d connectors; start timeout %s; %d failed before their confirmation",
			s, rate, offered.Seconds(), o.chargers, valleyConnectors, valleyStartTimeout, failed), nil)
	return nil
}

// valleySession creates session i on its own connector, confirms it at
// once and waits for its start at the charger: the time from the
// confirmation, or false when none arrived within the start timeout.
func (r *engineRig) valleySession(ctx context.Context, sw *startWatch, c *sim.Charger, i int) (time.Duration, bool, error) {
	id, order, err := r.openSession(ctx, sw, c, i%valleyConnectors+1, fmt.Sprintf("bench-valley-%d", i))
	if err != nil {
		return 0, false, err
	}
	confirmed := time.Now()
	if err := r.sb.Confirm(order); err != nil {
		return 0, false, fmt.Errorf("confirm %s: %w", id, err)
	}
	at, ok := sw.wait(ctx, id, confirmed.Add(valleyStartTimeout))
	return at.Sub(confirmed), ok, nil
}
