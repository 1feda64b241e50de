package main

import (
	"fmt"
	"slices"
	"time"
)

// scaleFigures is what one stack's run measured.
type scaleFigures struct {
	registered, connected, online, created, ramp time.Duration

	rssStart, heapStart    float64
	windowStart, windowEnd time.Time
	cpu, benchCPU          float64 // CPU seconds per wall second
	commitsPerS            float64 // feed changes a second in the window
	publishedPerS          float64 // messages the fleet published a second
	memBefore, memAfter    float64 // store bytes before the sessions, after the window
	viewBytes              float64
	meterLat, brokerLat    []time.Duration
	meterUnseen            int

	inFlight, chargingAfter, outboxPending, onlineAfter   int
	onlineAtStart                                         int // chargers online when the sessions were created
	toExec, toReady, toOutbox, toCmd, toCmdReal, toCmdMux time.Duration
	toAllOnline                                           time.Duration
	restartWarn, restartErrs                              int
	setupConnects, reconnects                             int64 // the fleet's connections made (reconnections included)
	bareHealthz, bareReady                                time.Duration
}

const mib = 1 << 20

// goal says whether a figure meets its goal.
func goal(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func (r *scaleRun) emit() {
	b, f, o := r.b, &r.f, r.o
	row := "scale." + o.stack
	real, mux := scaleSplit(o.chargers, o.connections)
	muxChargers := o.chargers - real
	fleet := fmt.Sprintf("%d chargers (%d on connections of their own, %d multiplexed on %d service-account connections), %d sessions, %s",
		o.chargers, real, muxChargers, mux, o.sessions, o.duration)
	if f.onlineAtStart < o.chargers {
		fleet += fmt.Sprintf(" (ONLY %d of the %d chargers came online within %.0fs)", f.onlineAtStart, o.chargers, f.online.Seconds())
	}
	common := map[string]float64{"chargers": float64(o.chargers), "sessions": float64(o.sessions), "duration_s": o.duration.Seconds(),
		"real_connections": float64(real), "mux_connections": float64(mux), "mux_chargers": float64(muxChargers),
		"service_cpu": f.cpu, "bench_cpu": f.benchCPU, "online_at_start": float64(f.onlineAtStart)}
	with := func(m map[string]float64) map[string]float64 {
		for k, v := range common {
			m[k] = v
		}
		return m
	}

	// meter → stored
	m50, m99 := percentile(f.meterLat, 0.50), percentile(f.meterLat, 0.99)
	b50, b99 := percentile(f.brokerLat, 0.50), percentile(f.brokerLat, 0.99)
	b.emit(benchRow{Scenario: row + ".meter", Figure: ms(m99), Unit: "ms p99 meter→stored", Ops: int64(len(f.meterLat)),
		Baseline: ms(b99), BaselineUnit: "ms p99 broker pub→recv QoS 1 (same broker, paced)", BaselineOps: int64(len(f.brokerLat)),
		Extra: with(map[string]float64{"meter_to_stored_p50_ms": ms(m50), "meter_to_stored_p99_ms": ms(m99),
			"meter_to_stored_max_ms": ms(slices.Max(f.meterLat)), "meter_unseen": float64(f.meterUnseen),
			"broker_pub_to_recv_p50_ms": ms(b50), "broker_pub_to_recv_p99_ms": ms(b99),
			"commits_per_s": f.commitsPerS, "fleet_msgs_per_s": f.publishedPerS}),
		Notes: fmt.Sprintf("%s; meter→stored (published → on the change feed) p50 %.1fms p99 %.1fms, %d samples, %d not seen within 10s; broker p50 %.2fms p99 %.2fms; %.0f commits/s, fleet %.0f msgs/s; goal p99 ≤ 1s: %s",
			fleet, ms(m50), ms(m99), len(f.meterLat), f.meterUnseen, ms(b50), ms(b99), f.commitsPerS, f.publishedPerS, goal(m99 <= time.Second))})

	// memory and CPU
	var run []scaleSample
	r.sampleMu.Lock()
	for _, s := range r.samples {
		if !s.restarted {
			run = append(run, s)
		}
	}
	after := r.samples[len(run):]
	r.sampleMu.Unlock()
	rssMin, rssMax, heapMin, heapMax := f.rssStart, f.rssStart, f.heapStart, f.heapStart
	for _, s := range run {
		rssMin, rssMax = min(rssMin, s.rss), max(rssMax, s.rss)
		if s.heap > 0 {
			heapMin, heapMax = min(heapMin, s.heap), max(heapMax, s.heap)
		}
	}
	var window []scaleSample
	for _, s := range run {
		if !s.at.Before(f.windowStart) && !s.at.After(f.windowEnd) {
			window = append(window, s)
		}
	}
	last := scaleSample{rss: f.rssStart, heap: f.heapStart}
	if len(run) > 0 {
		last = run[len(run)-1]
	}
	first, lastQ := quarterMeans(window)
	flat := 0.0
	if first > 0 {
		flat = lastQ / first
	}
	restartRSS := 0.0
	if len(after) > 0 {
		restartRSS = after[len(after)-1].rss
	}
	b.emit(benchRow{Scenario: row + ".rss", Figure: rssMax / mib, Unit: "MiB peak RSS", Ops: int64(len(run)),
		Baseline: f.rssStart / mib, BaselineUnit: "MiB RSS at start (empty store)", BaselineOps: 1,
		Extra: with(map[string]float64{"rss_min_mib": rssMin / mib, "rss_max_mib": rssMax / mib, "rss_last_mib": last.rss / mib,
			"heap_min_mib": heapMin / mib, "heap_max_mib": heapMax / mib, "heap_last_mib": last.heap / mib,
			"rss_first_quarter_mib": first / mib, "rss_last_quarter_mib": lastQ / mib, "rss_flat_ratio": flat,
			"rss_after_restart_mib": restartRSS / mib, "samples": float64(len(run)),
			"register_s": f.registered.Seconds(), "connect_s": f.connected.Seconds(), "online_s": f.online.Seconds(),
			"create_s": f.created.Seconds(), "ramp_s": f.ramp.Seconds()}),
		Notes: fmt.Sprintf("RSS min %.0f max %.0f last %.0f MiB, window mean first quarter %.0f last quarter %.0f MiB (×%.2f); Go heap min %.0f max %.0f last %.0f MiB; service CPU %.2f cores, bench %.2f; registered in %.0fs, online in %.0fs, %d charging in %.0fs; goal ≤ 1 GiB, flat: %s",
			rssMin/mib, rssMax/mib, last.rss/mib, first/mib, lastQ/mib, flat, heapMin/mib, heapMax/mib, last.heap/mib, f.cpu, f.benchCPU,
			f.registered.Seconds(), f.online.Seconds(), o.sessions, f.ramp.Seconds(), goal(rssMax <= 1<<30 && flat <= 1.1))})

	// store bytes per session
	what, unit := "bbolt file", "bbolt file bytes/session"
	if o.redisURL != "" {
		what, unit = "Redis used_memory", "Redis used_memory bytes/session"
	}
	perSession := (f.memAfter - f.memBefore) / float64(o.sessions)
	b.emit(benchRow{Scenario: row + ".store", Figure: perSession, Unit: unit, Ops: int64(o.sessions),
		Baseline: f.viewBytes, BaselineUnit: "bytes of one session's JSON view", BaselineOps: 1,
		Extra: with(map[string]float64{"store_bytes_before": f.memBefore, "store_bytes_after": f.memAfter, "bytes_per_session": perSession,
			"view_bytes": f.viewBytes}),
		Notes: fmt.Sprintf("%s %.1f MiB before the sessions, %.1f MiB after the run: (after − before) / %d sessions, history, feed and meter commits of the run included",
			what, f.memBefore/mib, f.memAfter/mib, o.sessions)})

	// restart
	b.emit(benchRow{Scenario: row + ".restart", Figure: ms(f.toCmd), Unit: "ms kill -9 → first command at its charger", Ops: int64(f.inFlight),
		Baseline: ms(f.bareHealthz), BaselineUnit: "ms bare start → /healthz (empty store)", BaselineOps: 1,
		Extra: with(map[string]float64{"in_flight": float64(f.inFlight), "charging_after": float64(f.chargingAfter),
			"to_exec_ms": ms(f.toExec), "to_ready_ms": ms(f.toReady), "to_outbox_caught_up_ms": ms(f.toOutbox),
			"outbox_pending_after": float64(f.outboxPending), "to_first_command_ms": ms(f.toCmd),
			"to_command_real_ms": ms(f.toCmdReal), "to_command_mux_ms": ms(f.toCmdMux), "to_all_online_ms": ms(f.toAllOnline),
			"online_after": float64(f.onlineAfter), "bare_healthz_ms": ms(f.bareHealthz), "bare_ready_ms": ms(f.bareReady),
			"restart_log_warnings": float64(f.restartWarn), "restart_log_errors": float64(f.restartErrs),
			"fleet_connects_setup": float64(f.setupConnects), "fleet_connects_after_kill": float64(f.reconnects)}),
		Notes: fmt.Sprintf("kill -9 with %d charging; from the kill: /readyz %.0fms, outbox caught up %.0fms (%d sessions active, %d tasks pending), stop at its charger %.0fms (own connection %s, multiplexed %s), %d of %d chargers online %s (the fleet's %d connections connected %d times meanwhile; %d times to come online at set-up); bare start /healthz %.0fms /readyz %.0fms; goal ≤ 5s: %s",
			f.inFlight, ms(f.toReady), ms(f.toOutbox), f.chargingAfter, f.outboxPending, ms(f.toCmd), msOrNone(f.toCmdReal), msOrNone(f.toCmdMux),
			f.onlineAfter, o.chargers, onlineWhen(f.toAllOnline), len(r.fleet.conns), f.reconnects, f.setupConnects, ms(f.bareHealthz), ms(f.bareReady), goal(f.toCmd <= 5*time.Second && f.toReady <= 5*time.Second))})
}

// msOrNone prints a duration in ms, or "none" for a command that did not
// arrive (or a kind of connection the run did not have).
func msOrNone(d time.Duration) string {
	if d == 0 {
		return "none"
	}
	return fmt.Sprintf("%.0fms", ms(d))
}

func onlineWhen(d time.Duration) string {
	if d == 0 {
		return "(not all within the wait)"
	}
	return fmt.Sprintf("at %.1fs", d.Seconds())
}

// quarterMeans is the mean RSS of the first and of the last quarter of
// samples (each at least one sample).
func quarterMeans(s []scaleSample) (first, last float64) {
	if len(s) == 0 {
		return 0, 0
	}
	q := max(len(s)/4, 1)
	mean := func(xs []scaleSample) float64 {
		var sum float64
		for _, x := range xs {
			sum += x.rss
		}
		return sum / float64(len(xs))
	}
	return mean(s[:q]), mean(s[len(s)-q:])
}
