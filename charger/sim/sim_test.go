package sim_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/charger/sim"
	"github.com/chargeflow/chargeflow/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type registry map[string]string

func (r registry) ChargerPasswordHash(_ context.Context, id string) (string, bool, error) {
	h, ok := r[id]
	return h, ok, nil
}

type inbox struct {
	mu  sync.Mutex
	msg []charger.Message
}

func (i *inbox) handle(_ context.Context, m charger.Inbound) error {
	if d, err := charger.Decode(m.Kind, m.Payload); err == nil {
		i.mu.Lock()
		i.msg = append(i.msg, d)
		i.mu.Unlock()
	}
	return nil
}

func (i *inbox) find(f func(charger.Message) bool) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, m := range i.msg {
		if f(m) {
			return true
		}
	}
	return false
}

func ack(cmdID, result, reason string) func(charger.Message) bool {
	return func(m charger.Message) bool {
		a, ok := m.(charger.AckMsg)
		return ok && a.CmdID == cmdID && a.Result == result && a.Reason == reason
	}
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// setup runs one simulated charger against the embedded broker (the
// Mosquitto side is covered by charger's shared link scenarios).
func setup(t *testing.T) (*charger.EmbeddedBroker, *sim.Charger, *inbox) {
	h, err := charger.HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	b, err := charger.NewEmbeddedBroker(charger.EmbeddedConfig{
		ListenAddr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), Credentials: registry{"SIM-1": h}})
	if err != nil {
		t.Fatal(err)
	}
	in := &inbox{}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := b.Start(ctx, in.handle); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	f, err := sim.New(sim.Config{BrokerURL: b.URL(), Chargers: []sim.ChargerSpec{{ID: "SIM-1", Password: "pw", Connectors: []int{1, 2}}},
		MeterInterval: 10 * time.Millisecond, PowerW: 3_600_000, TxnResend: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return b, f.Charger("SIM-1"), in
}

func start(id string, connector int, deadline time.Time, maxWh int64) charger.Command {
	return charger.Command{CmdID: id, Type: charger.CmdStart, SessionID: "s-" + id, Connector: connector,
		Deadline: deadline, MaxEnergyWh: maxWh}
}

func TestStartRules(t *testing.T) {
	b, c, in := setup(t)
	ctx := context.Background()
	later := time.Now().Add(time.Minute)
	send := func(cmd charger.Command) {
		t.Helper()
		if err := b.SendCommand(ctx, "SIM-1", cmd); err != nil {
			t.Fatal(err)
		}
	}
	send(start("expired", 1, time.Now().Add(-time.Second), 0))
	waitFor(t, "expired", func() bool { return in.find(ack("expired", charger.ResultRejected, charger.RejectExpired)) })
	send(start("unplugged", 1, later, 0))
	waitFor(t, "not_plugged", func() bool { return in.find(ack("unplugged", charger.ResultRejected, charger.RejectNotPlugged)) })
	send(start("no-such", 9, later, 0))
	waitFor(t, "unknown_connector", func() bool {
		return in.find(ack("no-such", charger.ResultRejected, charger.RejectUnknownConnector))
	})
	c.RejectStart(charger.RejectFaulted)
	_ = c.Plug(1)
	send(start("fault", 1, later, 0))
	waitFor(t, "injected reject", func() bool { return in.find(ack("fault", charger.ResultRejected, charger.RejectFaulted)) })
	c.RejectStart("")
	c.NeverStart(true)
	send(start("never", 1, later, 0))
	waitFor(t, "accepted", func() bool { return in.find(ack("never", charger.ResultAccepted, "")) })
	if _, ok := c.Session(1); ok {
		t.Fatal("NeverStart charger started")
	}
	c.NeverStart(false)
	// A skewed clock shows in the timestamps (behind: ahead would make this
	// start expire on the charger's clock); max_energy_wh ends by itself.
	c.ClockSkew(-10 * time.Minute)
	send(start("cap", 1, later, 500))
	waitFor(t, "energy_limit", func() bool {
		return in.find(func(m charger.Message) bool {
			e, ok := m.(charger.TxnMsg)
			return ok && e.SessionID == "s-cap" && e.Type == charger.TxnEnded && e.Reason == charger.EndEnergyLimit
		})
	})
	if !in.find(func(m charger.Message) bool {
		e, ok := m.(charger.TxnMsg)
		return ok && e.SessionID == "s-cap" && e.TS.Before(time.Now().Add(-5*time.Minute))
	}) {
		t.Fatal("clock skew not visible in txn timestamps")
	}
	// A repeated cmd_id is answered, not executed again.
	n := len(c.Commands())
	send(start("cap", 1, later, 500))
	waitFor(t, "repeat received", func() bool { return len(c.Commands()) == n+1 })
	if _, ok := c.Session(1); ok {
		t.Fatal("repeated start executed again")
	}
	// Busy: a second start on a charging connector.
	c.ClockSkew(0)
	send(start("run", 1, later, 0))
	waitFor(t, "charging", func() bool { _, ok := c.Session(1); return ok })
	send(start("busy", 1, later, 0))
	waitFor(t, "busy", func() bool { return in.find(ack("busy", charger.ResultRejected, charger.RejectBusy)) })
	// Meter reset: the register goes backwards, visible to the cloud.
	c.ResetMeter()
	waitFor(t, "register reset", func() bool {
		return in.find(func(m charger.Message) bool {
			mm, ok := m.(charger.MeterMsg)
			return ok && mm.SessionID == "s-run" && mm.EnergyWh < 1000
		})
	})
	// Unplug ends the session with ev_disconnected.
	_ = c.Unplug(1)
	waitFor(t, "ev_disconnected", func() bool {
		return in.find(func(m charger.Message) bool {
			e, ok := m.(charger.TxnMsg)
			return ok && e.SessionID == "s-run" && e.Reason == charger.EndEVDisconnected
		})
	})
}

func TestRebootKeepsSessionWithoutEnd(t *testing.T) {
	b, c, in := setup(t)
	_ = c.Plug(2)
	if err := b.SendCommand(context.Background(), "SIM-1", start("r", 2, time.Now().Add(time.Minute), 0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "charging", func() bool { _, ok := c.Session(2); return ok })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.Reboot(ctx, false); err != nil {
		t.Fatal(err)
	}
	s, ok := c.Session(2)
	if !ok || s.ID != "s-r" {
		t.Fatalf("session not resumed after reboot: %+v %v", s, ok)
	}
	seq := s.Seq
	waitFor(t, "meter after reboot", func() bool {
		return in.find(func(m charger.Message) bool {
			mm, ok := m.(charger.MeterMsg)
			return ok && mm.SessionID == "s-r" && mm.Seq > seq
		})
	})
}
