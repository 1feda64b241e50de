package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/store"
)

func testChargers(e *env) {
	t := e.t
	for _, id := range []string{"CP2", "CP1", "CP3"} {
		must(t, e.s.PutCharger(e.ctx, store.Charger{ID: id, Connectors: []int{1, 2}, TariffID: "default",
			ConnectorStatus: map[int]string{1: "available"}}))
	}
	cs, err := e.s.ListChargers(e.ctx)
	must(t, err)
	if len(cs) != 3 || cs[0].ID != "CP1" || cs[2].ID != "CP3" || cs[1].ConnectorStatus[1] != "available" {
		t.Fatalf("chargers %+v", cs)
	}
	_, err = e.s.GetCharger(e.ctx, "CP9")
	wantErr(t, err, store.ErrNotFound)
	boom := errors.New("boom")
	_, err = e.s.UpdateCharger(e.ctx, "CP1", func(c *store.Charger) ([]byte, error) { c.Online = true; return nil, boom })
	wantErr(t, err, boom)
	if c, _ := e.s.GetCharger(e.ctx, "CP1"); c.Online {
		t.Fatal("failed update was stored")
	}
	// concurrent presence updates are not lost
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.s.UpdateCharger(e.ctx, "CP1", func(c *store.Charger) ([]byte, error) {
				if c.ConnectorStatus == nil {
					c.ConnectorStatus = map[int]string{}
				}
				c.ConnectorStatus[100+i] = "seen"
				return nil, nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	c, err := e.s.GetCharger(e.ctx, "CP1")
	must(t, err)
	if len(c.ConnectorStatus) != 11 {
		t.Fatalf("lost updates: %v", c.ConnectorStatus)
	}

	for _, id := range []string{"peak", "default"} {
		must(t, e.s.PutTariff(e.ctx, money.Tariff{ID: id, Periods: []money.Period{{From: "00:00", To: "24:00", EnergyFenPerKWh: 70, ServiceFenPerKWh: 30}}}))
	}
	ts, err := e.s.ListTariffs(e.ctx)
	must(t, err)
	if len(ts) != 2 || ts[0].ID != "default" || ts[1].Periods[0].ServiceFenPerKWh != 30 {
		t.Fatalf("tariffs %+v", ts)
	}
	_, err = e.s.GetTariff(e.ctx, "nope")
	wantErr(t, err, store.ErrNotFound)

	var added []string
	for i := range 7 {
		id, err := e.s.AddAnomaly(e.ctx, store.Anomaly{At: T0.Add(time.Duration(i) * time.Second), ChargerID: "CP1",
			Topic: "ev/v1/CP1/meter", Payload: fmt.Appendf(nil, "raw-%d", i), Reason: "unknown session"})
		must(t, err)
		added = append(added, id)
	}
	var got []string
	cursor := ""
	for {
		p, err := e.s.ListAnomalies(e.ctx, 3, cursor)
		must(t, err)
		for _, a := range p.Anomalies {
			got = append(got, a.ID)
			if !strings.HasPrefix(string(a.Payload), "raw-") || a.Reason != "unknown session" {
				t.Fatalf("anomaly %+v", a)
			}
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	slices.Reverse(added)
	if !slices.Equal(got, added) {
		t.Fatalf("anomalies newest first: %v, want %v", got, added)
	}
}
