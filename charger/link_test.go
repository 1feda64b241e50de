package charger_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/charger/sim"
	"github.com/chargeflow/chargeflow/internal/testenv"
)

// fleet starts simulated chargers against b and closes them at the end.
func fleet(t *testing.T, b *broker, ids ...string) *sim.Fleet {
	t.Helper()
	var specs []sim.ChargerSpec
	for _, id := range ids {
		specs = append(specs, sim.ChargerSpec{ID: id, Password: b.register(t, id), Connectors: []int{1, 2}})
	}
	f, err := sim.New(sim.Config{BrokerURL: b.url, Prefix: b.prefix, Chargers: specs,
		MeterInterval: 20 * time.Millisecond, PowerW: 3_600_000, TxnResend: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func startCmd(cmdID, session string, connector int) charger.Command {
	return charger.Command{CmdID: cmdID, Type: charger.CmdStart, SessionID: session, Connector: connector,
		Deadline: time.Now().Add(time.Minute)}
}

// TestLink runs the same scenarios against Mosquitto (paho link) and the
// embedded broker.
func TestLink(t *testing.T) {
	scenarios := []struct {
		name string
		run  func(t *testing.T, b *broker)
	}{
		{"CommandReachesTheRightChargerOnce", testCommandOnce},
		{"DuplicatesAreRecognisable", testDuplicates},
		{"TxnResentUntilAcked", testTxnResentUntilAcked},
		{"PerChargerOrderUnderConcurrency", testOrder},
		{"KilledChargerWillArrives", testWill},
		{"RebootSendsQueuedEnded", testReboot},
		{"HandlerErrorMeansRedelivery", testHandlerError},
		{"RestartLosesNothing", testRestart},
		{"ReadyOnlyWhileConnected", testReady},
	}
	for name, mk := range brokers() {
		for _, sc := range scenarios {
			t.Run(name+"/"+sc.name, func(t *testing.T) { sc.run(t, mk(t)) })
		}
	}
}

func testCommandOnce(t *testing.T, b *broker) {
	rec := &recorder{}
	l := b.newLink(t, "a")
	startLink(t, l, rec.handle)
	f := fleet(t, b, "CP-A", "CP-B")
	a := f.Charger("CP-A")
	if err := a.Plug(1); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cmd := startCmd("cmd-1", "s-1", 1)
	if err := l.SendCommand(ctx, "CP-A", cmd); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ack and txn started", func() bool {
		return len(rec.decoded("CP-A", charger.KindAck)) >= 1 && len(rec.decoded("CP-A", charger.KindTxn)) >= 1
	})
	ack := rec.decoded("CP-A", charger.KindAck)[0].(charger.AckMsg)
	if ack.CmdID != "cmd-1" || ack.Result != charger.ResultAccepted {
		t.Fatalf("ack = %+v", ack)
	}
	// The same command again (a retried effect) gets the same answer and is not executed twice.
	if err := l.SendCommand(ctx, "CP-A", cmd); err != nil {
		t.Fatal(err)
	}
	eventually(t, "second ack", func() bool { return len(rec.decoded("CP-A", charger.KindAck)) >= 2 })
	if got := len(a.Commands()); got != 2 {
		t.Fatalf("CP-A got %d commands, want 2 (one per send)", got)
	}
	if got := len(f.Charger("CP-B").Commands()); got != 0 {
		t.Fatalf("CP-B got %d commands, want 0", got)
	}
	// One start executed: one started event. The charger re-sends it until
	// the cloud acknowledges it (this recorder never does), always under the
	// same event_id, so count the distinct ones.
	started := map[string]bool{}
	for _, m := range rec.decoded("CP-A", charger.KindTxn) {
		if ev := m.(charger.TxnMsg); ev.Type == charger.TxnStarted {
			started[ev.EventID] = true
		}
	}
	if len(started) != 1 {
		t.Fatalf("%d distinct txn started events, want 1: %v", len(started), started)
	}
	// Meter flows with seq increasing by one.
	eventually(t, "meter", func() bool { return len(rec.decoded("CP-A", charger.KindMeter)) >= 3 })
	ms := rec.decoded("CP-A", charger.KindMeter)
	for i := 1; i < len(ms); i++ {
		if ms[i].(charger.MeterMsg).Seq != ms[i-1].(charger.MeterMsg).Seq+1 {
			t.Fatalf("meter seq not consecutive: %v then %v", ms[i-1], ms[i])
		}
	}
	// Stop ends the session with "remote".
	if err := l.SendCommand(ctx, "CP-A", charger.Command{CmdID: "cmd-2", Type: charger.CmdStop, SessionID: "s-1"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ended remote", func() bool {
		for _, m := range rec.decoded("CP-A", charger.KindTxn) {
			if m.(charger.TxnMsg).Type == charger.TxnEnded && m.(charger.TxnMsg).Reason == charger.EndRemote {
				return true
			}
		}
		return false
	})
}

func testDuplicates(t *testing.T, b *broker) {
	rec := &recorder{}
	l := b.newLink(t, "a")
	startLink(t, l, rec.handle)
	f := fleet(t, b, "CP-D")
	d := f.Charger("CP-D")
	d.Duplicate(true)
	_ = d.Plug(1)
	if err := l.SendCommand(context.Background(), "CP-D", startCmd("c1", "s-dup", 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "duplicated txn started", func() bool { return len(rec.decoded("CP-D", charger.KindTxn)) >= 2 })
	txns := rec.decoded("CP-D", charger.KindTxn)
	if txns[0].(charger.TxnMsg).EventID != txns[1].(charger.TxnMsg).EventID {
		t.Fatalf("duplicates carry different event ids: %v", txns)
	}
	eventually(t, "duplicated meter", func() bool { return len(rec.decoded("CP-D", charger.KindMeter)) >= 2 })
	ms := rec.decoded("CP-D", charger.KindMeter)
	a, c := ms[0].(charger.MeterMsg), ms[1].(charger.MeterMsg)
	if a.SessionID != c.SessionID || a.Seq != c.Seq {
		t.Fatalf("duplicate meter not recognisable by (session_id, seq): %v %v", a, c)
	}
}

func testTxnResentUntilAcked(t *testing.T, b *broker) {
	rec := &recorder{}
	l := b.newLink(t, "a")
	startLink(t, l, rec.handle)
	f := fleet(t, b, "CP-T")
	c := f.Charger("CP-T")
	_ = c.Plug(1)
	if err := l.SendCommand(context.Background(), "CP-T", startCmd("c1", "s-t", 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "txn re-sent", func() bool { return len(rec.decoded("CP-T", charger.KindTxn)) >= 3 })
	ev := rec.decoded("CP-T", charger.KindTxn)[0].(charger.TxnMsg)
	if err := l.AckTxn(context.Background(), "CP-T", ev.EventID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "queue empty after txnack", func() bool { return len(c.Pending()) == 0 })
}

// testOrder: many chargers publish numbered messages at once while the
// handler is slow at random; each charger's messages arrive in order.
func testOrder(t *testing.T, b *broker) {
	const chargers, perCharger = 8, 60
	rec := &recorder{}
	var calls atomic.Int64
	rec.setFail(func(m charger.Inbound) error {
		if calls.Add(1)%7 == 0 {
			time.Sleep(time.Millisecond) // uneven handler latency
		}
		return nil
	})
	l := b.newLink(t, "a")
	startLink(t, l, rec.handle)
	var wg sync.WaitGroup
	topics := charger.Topics{Prefix: b.prefix}
	for i := range chargers {
		id := fmt.Sprintf("ORD-%d", i)
		c, err := rawClient(t, b.url, id, id, b.register(t, id), true)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 1; seq <= perCharger; seq++ {
				p, _ := charger.Encode(charger.MeterMsg{SessionID: "s", Connector: 1, Seq: int64(seq),
					TS: time.Now(), EnergyWh: int64(seq)})
				// Do not wait for each PUBACK: several messages in flight per charger.
				c.Publish(topics.Up(id, charger.KindMeter), 1, false, p)
			}
		}()
	}
	wg.Wait()
	eventually(t, "all messages", func() bool { return rec.count() >= chargers*perCharger })
	for i := range chargers {
		id := fmt.Sprintf("ORD-%d", i)
		var last int64
		for _, m := range rec.decoded(id, charger.KindMeter) {
			seq := m.(charger.MeterMsg).Seq
			if seq < last {
				rec.mu.Lock()
				for _, in := range rec.all {
					if in.ChargerID == id {
						d, _ := charger.Decode(in.Kind, in.Payload)
						t.Logf("%d dup=%v", d.(charger.MeterMsg).Seq, in.Duplicate)
					}
				}
				rec.mu.Unlock()
				t.Fatalf("%s: seq %d after %d", id, seq, last)
			}
			last = seq
		}
		if last != perCharger {
			t.Fatalf("%s: last seq %d, want %d", id, last, perCharger)
		}
	}
}

func testWill(t *testing.T, b *broker) {
	rec := &recorder{}
	var changes []charger.PresenceChange
	var mu sync.Mutex
	pres := charger.NewPresence(nil, func(c charger.PresenceChange) { mu.Lock(); changes = append(changes, c); mu.Unlock() })
	l := b.newLink(t, "a")
	startLink(t, l, func(ctx context.Context, m charger.Inbound) error {
		pres.Observe(m)
		return rec.handle(ctx, m)
	})
	f := fleet(t, b, "CP-W")
	eventually(t, "online", func() bool { s, ok := pres.Get("CP-W"); return ok && s.Online })
	f.Charger("CP-W").Kill()
	eventually(t, "will", func() bool {
		for _, m := range rec.decoded("CP-W", charger.KindState) {
			if s := m.(charger.StateMsg); !s.Online && s.Reason == charger.OfflineLWT {
				return true
			}
		}
		return false
	})
	s, _ := pres.Get("CP-W")
	if s.Online || s.Reason != charger.OfflineLWT || s.LastHeard.IsZero() {
		t.Fatalf("presence after will: %+v", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) < 2 || !changes[0].Online || changes[len(changes)-1].Online {
		t.Fatalf("presence changes: %+v", changes)
	}
}

func testReboot(t *testing.T, b *broker) {
	rec := &recorder{}
	pres := charger.NewPresence(nil, nil)
	var reboots atomic.Int32
	pres2 := charger.NewPresence(nil, func(c charger.PresenceChange) {
		if c.Reboot {
			reboots.Add(1)
		}
	})
	l := b.newLink(t, "a")
	startLink(t, l, func(ctx context.Context, m charger.Inbound) error {
		pres.Observe(m)
		pres2.Observe(m)
		return rec.handle(ctx, m)
	})
	f := fleet(t, b, "CP-R")
	c := f.Charger("CP-R")
	_ = c.Plug(1)
	if err := l.SendCommand(context.Background(), "CP-R", startCmd("c1", "s-r", 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "charging", func() bool { _, ok := c.Session(1); return ok })
	boot := c.BootID()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Reboot(ctx, true); err != nil {
		t.Fatal(err)
	}
	if c.BootID() == boot {
		t.Fatal("boot id unchanged by reboot")
	}
	eventually(t, "queued ended after reboot", func() bool {
		for _, m := range rec.decoded("CP-R", charger.KindTxn) {
			if e := m.(charger.TxnMsg); e.Type == charger.TxnEnded && e.Reason == charger.EndReboot && e.Offline {
				return true
			}
		}
		return false
	})
	eventually(t, "reboot seen by presence", func() bool { return reboots.Load() >= 1 })
}

func testHandlerError(t *testing.T, b *broker) {
	rec := &recorder{}
	var failures atomic.Int32
	rec.setFail(func(m charger.Inbound) error {
		if m.Kind == charger.KindMeter && failures.Add(1) <= 3 {
			return errors.New("store unavailable")
		}
		return nil
	})
	l := b.newLink(t, "a")
	startLink(t, l, rec.handle)
	id := "CP-E"
	// A charger-like client: persistent session, auto-reconnect, ordered
	// store. The embedded broker drops its connection on each failed
	// hand-off; it reconnects and re-sends.
	c := paho.NewClient(paho.NewClientOptions().AddBroker(b.url).SetClientID(id).SetUsername(id).
		SetPassword(b.register(t, id)).SetCleanSession(false).SetAutoReconnect(true).
		SetConnectRetryInterval(20 * time.Millisecond).SetMaxReconnectInterval(50 * time.Millisecond).
		SetStore(paho.NewOrderedMemoryStore()))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(0)
	topics := charger.Topics{Prefix: b.prefix}
	for seq := 1; seq <= 5; seq++ {
		p, _ := charger.Encode(charger.MeterMsg{SessionID: "s", Connector: 1, Seq: int64(seq), TS: time.Now(), EnergyWh: 1})
		c.Publish(topics.Up(id, charger.KindMeter), 1, false, p)
	}
	eventually(t, "all stored", func() bool {
		ms := rec.decoded(id, charger.KindMeter)
		return len(ms) >= 5 && ms[len(ms)-1].(charger.MeterMsg).Seq == 5
	})
	var last int64
	for _, m := range rec.decoded(id, charger.KindMeter) {
		if s := m.(charger.MeterMsg).Seq; s < last {
			t.Fatalf("order broken by retries: %d after %d", s, last)
		} else {
			last = s
		}
	}
}

// testRestart: chargeflow stops; chargers keep sending QoS 1 messages; a
// new chargeflow with the same identity gets every one of them.
func testRestart(t *testing.T, b *broker) {
	rec := &recorder{}
	l := b.newLink(t, "restart")
	startLink(t, l, rec.handle)
	f := fleet(t, b, "CP-X")
	c := f.Charger("CP-X")
	eventually(t, "online", func() bool { return len(rec.decoded("CP-X", charger.KindState)) >= 1 })
	// A message the first instance fails to store is not lost either.
	rec.setFail(func(m charger.Inbound) error {
		if m.Kind == charger.KindStatus {
			return errors.New("store down")
		}
		return nil
	})
	_ = c.Plug(1) // status preparing: never stored by the first instance
	time.Sleep(50 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rec.setFail(nil)
	const n = 20
	for i := range n {
		if i%2 == 0 {
			_ = c.Plug(2)
		} else {
			_ = c.Unplug(2)
		}
	}
	l2 := b.newLink(t, "restart")
	startLink(t, l2, rec.handle)
	eventually(t, "every status after restart", func() bool { return len(rec.decoded("CP-X", charger.KindStatus)) >= n+1 })
	var plugged1 bool
	for _, m := range rec.decoded("CP-X", charger.KindStatus) {
		if s := m.(charger.StatusMsg); s.Connector == 1 && s.Status == charger.StatusPreparing {
			plugged1 = true
		}
	}
	if !plugged1 {
		t.Fatal("the status the first instance failed to store never came again")
	}
	// Power the chargers off while the broker is up: a paho client stopped
	// while it reconnects lingers in a back-off sleep that goleak would see.
	_ = f.Close()
}

func TestStartFailsCleanly(t *testing.T) {
	l, err := charger.NewPahoLink(charger.PahoConfig{URL: fmt.Sprintf("tcp://127.0.0.1:%d", testenv.FreePort(t)), ClientID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Start(ctx, (&recorder{}).handle); err == nil {
		t.Fatal("Start succeeded without a broker")
	}
	if err := l.SendCommand(ctx, "CP1", startCmd("c", "s", 1)); err == nil {
		t.Fatal("SendCommand on a closed link succeeded")
	}
	_ = l.Close()
	if _, err := charger.NewPahoLink(charger.PahoConfig{URL: "tcp://x"}); err == nil {
		t.Fatal("missing ClientID accepted")
	}
	if _, err := charger.NewEmbeddedBroker(charger.EmbeddedConfig{}); err == nil {
		t.Fatal("missing Credentials accepted")
	}
	// A taken port fails at Start, and Close twice is fine.
	b := embeddedBroker(t)
	first := b.newLink(t, "")
	startLink(t, first, (&recorder{}).handle)
	second := b.newLink(t, "")
	if err := second.Start(ctx, (&recorder{}).handle); err == nil {
		t.Fatal("second broker on the same port started")
	}
	_ = second.Close()
	_ = first.Close()
	_ = first.Close()
}

// testReady: a link is ready for /readyz once started, and not after Close.
func testReady(t *testing.T, b *broker) {
	l := b.newLink(t, "ready")
	r, ok := l.(interface{ Ready() error })
	if !ok {
		t.Fatalf("%T has no Ready", l)
	}
	if err := r.Ready(); err == nil {
		t.Fatal("ready before Start")
	}
	startLink(t, l, (&recorder{}).handle)
	eventually(t, "ready", func() bool { return r.Ready() == nil })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Ready(); err == nil {
		t.Fatal("ready after Close")
	}
}
