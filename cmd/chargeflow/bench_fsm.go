package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
)

// benchSession returns a session in `charging` that started at 09:59:30
// Beijing time, and a meter sample 90 s later: the sample spans the 10:00
// boundary of the default tariff, so applying it splits energy over two
// periods.
func benchSession(m *fsm.Machine, id, chargerID string) (fsm.Session, fsm.Event, error) {
	t0 := time.Date(2026, 11, 26, 1, 59, 0, 0, time.UTC) // 09:59 Beijing
	r, err := m.NewSession(fsm.Event{Type: fsm.EvCreate, At: t0, By: fsm.ByApp, Create: &fsm.CreateParams{
		ID: id, ChargerID: chargerID, Connector: 1, OpenID: "bench-openid", MaxAmountFen: 50_000,
		Tariff: money.DefaultTariff(), OutOrderNo: "BENCH" + id, CreateReqDate: "20261126"}})
	if err != nil {
		return fsm.Session{}, fsm.Event{}, fmt.Errorf("create: %w", err)
	}
	s := r.Session
	at := t0.Add(20 * time.Second)
	for _, e := range []fsm.Event{
		{Type: fsm.EvConfirm, At: at, By: fsm.ByPayScore},
		{Type: fsm.EvStarted, At: at.Add(10 * time.Second), By: fsm.ByCharger, ChargerTime: at.Add(10 * time.Second), MeterWh: 1000},
	} {
		if r, err = m.Apply(s, e); err != nil {
			return fsm.Session{}, fsm.Event{}, fmt.Errorf("%s: %w", e.Type, err)
		}
		s = r.Session
	}
	sampleAt := at.Add(100 * time.Second)
	meter := fsm.Event{Type: fsm.EvMeter, At: sampleAt, By: fsm.ByCharger, ChargerTime: sampleAt, MeterWh: 1500, Seq: 1}
	return s, meter, nil
}

// benchFSM: Machine.Apply of a meter sample (clone, tariff split, cap check)
// beside a JSON decode+encode of the same session record, which is what the
// engine pays around every Apply to load and store the session.
func benchFSM(ctx context.Context, b *bench) {
	const name = "fsm.apply"
	m, err := fsm.New(fsm.DefaultConfig())
	if err != nil {
		b.fail(name, err)
		return
	}
	s, meter, err := benchSession(m, "fsmbench", "CP1")
	if err != nil {
		b.fail(name, err)
		return
	}
	if r, err := m.Apply(s, meter); err != nil || !r.Changed {
		b.fail(name, fmt.Errorf("meter sample not applied: %v", err))
		return
	}
	raw, err := json.Marshal(s)
	if err != nil {
		b.fail(name, err)
		return
	}
	var sink int
	f, base, err := alternate(ctx, b.duration,
		func() error {
			r, err := m.Apply(s, meter)
			sink += len(r.History)
			return err
		},
		func() error {
			var d fsm.Session
			if err := json.Unmarshal(raw, &d); err != nil {
				return err
			}
			out, err := json.Marshal(d)
			sink += len(out)
			return err
		})
	_ = sink
	if err != nil {
		b.fail(name, err)
		return
	}
	b.emit(benchRow{Scenario: name, Figure: f.rate(), Unit: "Apply/s (meter sample)", Ops: f.ops,
		Baseline: base.rate(), BaselineUnit: "session JSON decode+encode/s", BaselineOps: base.ops,
		Extra: map[string]float64{"allocs_per_op": f.allocsPerOp(), "baseline_allocs_per_op": base.allocsPerOp(), "record_bytes": float64(len(raw))},
		Notes: fmt.Sprintf("%.0f allocs/op; baseline %.0f allocs/op on a %d-byte record", f.allocsPerOp(), base.allocsPerOp(), len(raw))})
}
