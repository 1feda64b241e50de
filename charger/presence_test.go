package charger_test

import (
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/charger"
)

func TestPresence(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	var changes []charger.PresenceChange
	p := charger.NewPresence(func() time.Time { return now }, func(c charger.PresenceChange) { changes = append(changes, c) })
	tp := charger.Topics{}
	in := func(k charger.Kind, payload string, retained bool) charger.Inbound {
		return charger.Inbound{ChargerID: "CP1", Kind: k, Topic: tp.Up("CP1", k), Payload: []byte(payload), Retained: retained}
	}
	p.Observe(in(charger.KindState, `{"online":true,"boot_id":"b1"}`, true))
	if s, _ := p.Get("CP1"); !s.Online || !s.LastHeard.IsZero() {
		t.Fatalf("a retained state is presence but not a sign of life: %+v", s)
	}
	now = now.Add(time.Minute)
	p.Observe(in(charger.KindMeter, `{}`, false)) // malformed: still heard
	if s, _ := p.Get("CP1"); !s.LastHeard.Equal(now) {
		t.Fatalf("last heard %v", s.LastHeard)
	}
	p.Observe(in(charger.KindState, `{"online":true,"boot_id":"b1"}`, false)) // same boot: no change
	p.Observe(in(charger.KindState, `{"online":false,"reason":"lwt"}`, false))
	p.Observe(in(charger.KindState, `{"online":true,"boot_id":"b2"}`, false))
	p.Observe(in(charger.KindState, `{"online":true,"boot_id":"b3"}`, false)) // reboot unseen offline
	p.Observe(in(charger.KindState, `not json`, false))
	want := []struct {
		online, reboot bool
		reason         string
	}{{true, false, ""}, {false, false, "lwt"}, {true, true, ""}, {true, true, ""}}
	if len(changes) != len(want) {
		t.Fatalf("changes %+v", changes)
	}
	for i, w := range want {
		if c := changes[i]; c.Online != w.online || c.Reboot != w.reboot || c.Reason != w.reason {
			t.Errorf("change %d = %+v, want %+v", i, c, w)
		}
	}
	if all := p.All(); len(all) != 1 || all[0].BootID != "b3" {
		t.Fatalf("All = %+v", all)
	}
}
