package fsm

import (
	"encoding/json"
	"testing"
	"time"
)

// BenchmarkApplyMeter is the commonest transition: a meter sample on a
// charging session (clone, tariff split, cap check).
func BenchmarkApplyMeter(b *testing.B) {
	bl := sessionIn(b, Charging)
	s := bl.s
	e := Event{Type: EvMeter, At: bl.at.Add(time.Minute), By: ByCharger, ChargerTime: bl.at.Add(time.Minute), MeterWh: 2000, Seq: 1}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bl.m.Apply(s, e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyTransition is a state change through looplab (stop).
func BenchmarkApplyTransition(b *testing.B) {
	bl := sessionIn(b, Charging)
	s := bl.s
	e := Event{Type: EvStop, At: bl.at.Add(time.Minute), By: ByApp}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bl.m.Apply(s, e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRebuildAndApply is what the engine pays per event: decode the
// stored record, apply, encode the new one.
func BenchmarkRebuildAndApply(b *testing.B) {
	bl := sessionIn(b, Charging)
	raw, _ := json.Marshal(bl.s)
	e := Event{Type: EvMeter, At: bl.at.Add(time.Minute), By: ByCharger, ChargerTime: bl.at.Add(time.Minute), MeterWh: 2000, Seq: 1}
	b.ReportAllocs()
	for b.Loop() {
		var s Session
		if err := json.Unmarshal(raw, &s); err != nil {
			b.Fatal(err)
		}
		r, err := bl.m.Apply(s, e)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := json.Marshal(r.Session); err != nil {
			b.Fatal(err)
		}
	}
}
