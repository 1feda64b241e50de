package session_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/charger/sim"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// instance is one chargeflow process: its own store client, broker link and
// engine with its workers.
type instance struct {
	eng  *session.Engine
	st   store.Store
	link charger.Link
	stop func()
}

// TestTwoInstancesNeverDoTheSameThingTwice runs two engines on one Redis and
// one Mosquitto (charger traffic split by a shared subscription) and drives
// sessions concurrently through both: every session is paid once, every
// charger got exactly one start per session, and Pay Score saw exactly one
// complete and one debit per order.
func TestTwoInstancesNeverDoTheSameThingTwice(t *testing.T) {
	ctx := context.Background()
	redisURL, mqttURL, ns := testenv.Redis(t), testenv.MQTT(t), testenv.Namespace(t)
	prefix := ns + "/ev/v1"

	sb, err := sandbox.New(sandbox.Options{NotifyBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sbSrv := httptest.NewServer(sb.Handler())
	defer func() { sb.Close(); sbSrv.Close() }()
	payCfg, err := sb.ClientConfig(sbSrv.URL)
	if err != nil {
		t.Fatal(err)
	}

	var notify struct {
		sync.Mutex
		eng *session.Engine
	}
	notifySrv := httptest.NewServer(payscore.NotifyHandler(payCfg.Verifier, func(ctx context.Context, n payscore.Notification) error {
		notify.Lock()
		eng := notify.eng
		notify.Unlock()
		return eng.HandleNotification(ctx, n)
	}, payscore.NotifyOptions{}))
	defer notifySrv.Close()
	payCfg.NotifyURL = notifySrv.URL
	pay, err := payscore.New(payCfg)
	if err != nil {
		t.Fatal(err)
	}

	mcfg := fsm.DefaultConfig()
	mcfg.PollInterval = 300 * time.Millisecond
	mcfg.DebitRetry = []time.Duration{200 * time.Millisecond}
	newInstance := func(name string) *instance {
		st, err := redisstore.New(ctx, redisURL, redisstore.Options{Prefix: ns})
		if err != nil {
			t.Fatal(err)
		}
		link, err := charger.NewPahoLink(charger.PahoConfig{URL: mqttURL, ClientID: "chargeflow-" + ns + name, Prefix: prefix, ShareGroup: "cf" + ns})
		if err != nil {
			t.Fatal(err)
		}
		eng, err := session.New(session.Config{Machine: mcfg, InstanceID: name, Workers: 3, IdleWait: 20 * time.Millisecond}, st, pay, link, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		if err := link.Start(runCtx, eng.HandleCharger); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = eng.Run(runCtx) }()
		return &instance{eng: eng, st: st, link: link, stop: func() { cancel(); <-done; link.Close(); st.Close() }}
	}
	a, b := newInstance("a"), newInstance("b")
	defer a.stop()
	defer b.stop()
	notify.Lock()
	notify.eng = b.eng
	notify.Unlock()

	const n = 6
	if err := a.eng.PutTariff(ctx, money.DefaultTariff()); err != nil {
		t.Fatal(err)
	}
	specs := make([]sim.ChargerSpec, n)
	for i := range specs {
		id := fmt.Sprintf("%s-CP%d", ns, i)
		specs[i] = sim.ChargerSpec{ID: id, Connectors: []int{1}}
		if _, err := a.eng.PutCharger(ctx, id, session.ChargerRequest{Connectors: []int{1}, TariffID: "default"}); err != nil {
			t.Fatal(err)
		}
	}
	fleet, err := sim.New(sim.Config{BrokerURL: mqttURL, Prefix: prefix, Chargers: specs, MeterInterval: 50 * time.Millisecond,
		PowerW: 360_000, TxnResend: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := fleet.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	state := func(id string) fsm.State {
		s, err := a.st.GetSession(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return s.State
	}
	for _, sp := range specs {
		waitFor(sp.ID+" online", func() bool { c, err := a.st.GetCharger(ctx, sp.ID); return err == nil && c.Online })
	}

	// Sessions created half on each instance, run concurrently.
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i, sp := range specs {
		inst := a
		if i%2 == 1 {
			inst = b
		}
		c := fleet.Charger(sp.ID)
		if err := c.Plug(1); err != nil {
			t.Fatal(err)
		}
		s, err := inst.eng.Create(ctx, session.NewID(time.Now()), session.CreateRequest{ChargerID: sp.ID, Connector: 1, OpenID: "o", MaxAmountFen: 5000})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = s.ID
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sb.Confirm(s.OutOrderNo); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i, id := range ids {
		waitFor("charging", func() bool { return state(id) == fsm.Charging })
		c := fleet.Charger(specs[i].ID)
		waitFor("energy", func() bool { si, ok := c.Session(1); return ok && c.Register(1) > si.StartWh+100 })
		inst := a
		if i%2 == 0 {
			inst = b // stop through the other instance
		}
		if _, err := inst.eng.Stop(ctx, id, fsm.ByApp); err != nil {
			t.Fatal(err)
		}
	}
	var total money.Fen
	for i, id := range ids {
		waitFor("paid", func() bool { return state(id) == fsm.Paid })
		s, _ := a.st.GetSession(ctx, id)
		starts := 0
		for _, cmd := range fleet.Charger(specs[i].ID).Commands() {
			if cmd.Type == charger.CmdStart && cmd.SessionID == id {
				starts++
			}
		}
		if starts != 1 {
			t.Errorf("session %s: %d start commands", id, starts)
		}
		o, _ := sb.Order(s.OutOrderNo)
		if o.Completes != 1 || len(o.Payments) != 1 || len(o.Registrations) != 1 || o.Total != s.AmountFen {
			t.Errorf("session %s: order %+v, amount %d", id, o, s.AmountFen)
		}
		total += s.AmountFen
	}
	var collected money.Fen
	for _, l := range sb.Ledger() {
		collected += l.Collected
	}
	if collected != total {
		t.Fatalf("collected %d, billed %d", collected, total)
	}
}
