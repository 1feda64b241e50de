package sim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/charger/sim"
	"github.com/chargeflow/chargeflow/internal/testenv"
)

// The state file (Config.StateDir) against the embedded broker: a fleet is
// killed as a process dies (no DISCONNECT, no clean end), and a new fleet
// with the same state dir takes over the same charger ids.

func (i *inbox) len() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return len(i.msg)
}

// txns returns the txn events received from message index from on.
func (i *inbox) txns(from int) []charger.TxnMsg {
	i.mu.Lock()
	defer i.mu.Unlock()
	var out []charger.TxnMsg
	for _, m := range i.msg[from:] {
		if e, ok := m.(charger.TxnMsg); ok {
			out = append(out, e)
		}
	}
	return out
}

func (i *inbox) maxMeter(sessionID string) (wh int64, n int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, m := range i.msg {
		if mm, ok := m.(charger.MeterMsg); ok && mm.SessionID == sessionID {
			wh, n = max(wh, mm.EnergyWh), n+1
		}
	}
	return wh, n
}

// firstTxn waits for a txn event (from message index from on) matching f.
func firstTxn(t *testing.T, in *inbox, from int, what string, f func(charger.TxnMsg) bool) charger.TxnMsg {
	t.Helper()
	var got charger.TxnMsg
	waitFor(t, what, func() bool {
		for _, e := range in.txns(from) {
			if f(e) {
				got = e
				return true
			}
		}
		return false
	})
	return got
}

func countEvent(in *inbox, from int, eventID string) int {
	n := 0
	for _, e := range in.txns(from) {
		if e.EventID == eventID {
			n++
		}
	}
	return n
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func nvmBroker(t *testing.T, ids ...string) (*charger.EmbeddedBroker, *inbox) {
	t.Helper()
	h, err := charger.HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	reg := registry{}
	for _, id := range ids {
		reg[id] = h
	}
	b, err := charger.NewEmbeddedBroker(charger.EmbeddedConfig{
		ListenAddr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), Credentials: reg})
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
	return b, in
}

// nvmFleet starts a fleet of the chargers ids on b, with state in dir ("" for none).
func nvmFleet(t *testing.T, b *charger.EmbeddedBroker, dir string, log *slog.Logger, ids ...string) *sim.Fleet {
	t.Helper()
	var specs []sim.ChargerSpec
	for _, id := range ids {
		specs = append(specs, sim.ChargerSpec{ID: id, Password: "pw", Connectors: []int{1, 2}})
	}
	f, err := sim.New(sim.Config{BrokerURL: b.URL(), Chargers: specs, StateDir: dir, Logger: log,
		MeterInterval: 20 * time.Millisecond, PowerW: 3_600_000, TxnResend: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return f
}

// die is the process dying: every charger loses power at once, nothing is
// said to the broker, nothing more is written.
func die(f *sim.Fleet) {
	for _, c := range f.Chargers() {
		c.Kill()
	}
	_ = f.Close()
}

func send(t *testing.T, b *charger.EmbeddedBroker, cmd charger.Command) {
	t.Helper()
	if err := b.SendCommand(context.Background(), "SIM-1", cmd); err != nil {
		t.Fatal(err)
	}
}

func ackTxn(t *testing.T, b *charger.EmbeddedBroker, eventID string) {
	t.Helper()
	if err := b.AckTxn(context.Background(), "SIM-1", eventID); err != nil {
		t.Fatal(err)
	}
}

// runSession starts session s-<cmdID> on connector 1 as the cloud would and
// waits for its started event and a few meter samples.
func runSession(t *testing.T, b *charger.EmbeddedBroker, in *inbox, c *sim.Charger, cmdID string) charger.TxnMsg {
	t.Helper()
	if err := c.Plug(1); err != nil {
		t.Fatal(err)
	}
	send(t, b, start(cmdID, 1, time.Now().Add(time.Minute), 0))
	started := firstTxn(t, in, 0, "started "+cmdID, func(e charger.TxnMsg) bool {
		return e.SessionID == "s-"+cmdID && e.Type == charger.TxnStarted
	})
	waitFor(t, "meter samples", func() bool { _, n := in.maxMeter("s-" + cmdID); return n >= 3 })
	return started
}

func TestRestartEndsRunningSessionWithPowerLoss(t *testing.T) {
	b, in := nvmBroker(t, "SIM-1")
	dir := t.TempDir()
	f1 := nvmFleet(t, b, dir, nil, "SIM-1")
	started := runSession(t, b, in, f1.Charger("SIM-1"), "p")
	ackTxn(t, b, started.EventID)
	waitFor(t, "started acked", func() bool { return len(f1.Charger("SIM-1").Pending()) == 0 })
	_, n := in.maxMeter("s-p")
	waitFor(t, "more samples", func() bool { _, m := in.maxMeter("s-p"); return m >= n+3 }) // nothing else saved meanwhile
	die(f1)

	from := in.len()
	f2 := nvmFleet(t, b, dir, nil, "SIM-1")
	c := f2.Charger("SIM-1")
	if c.Boots() != 2 {
		t.Fatalf("boots = %d after a restart, want 2", c.Boots())
	}
	ended := firstTxn(t, in, from, "queued ended", func(e charger.TxnMsg) bool {
		return e.SessionID == "s-p" && e.Type == charger.TxnEnded
	})
	if ended.Reason != charger.EndPowerLoss || !ended.Offline || ended.Connector != 1 {
		t.Fatalf("ended after restart = %+v, want reason power_loss, offline", ended)
	}
	if ended.MeterWh < started.MeterWh || ended.TS.Before(started.TS) {
		t.Fatalf("ended %+v before started %+v", ended, started)
	}
	if last, _ := in.maxMeter("s-p"); ended.MeterWh < last {
		t.Fatalf("ended register %d below the last sample %d the cloud saw", ended.MeterWh, last)
	}
	if _, ok := c.Session(1); ok {
		t.Fatal("a session survived the process restart")
	}
	// Re-sent, same event_id, until acked.
	waitFor(t, "ended re-sent", func() bool { return countEvent(in, from, ended.EventID) >= 3 })
	ackTxn(t, b, ended.EventID)
	waitFor(t, "ended acked", func() bool { return len(c.Pending()) == 0 })

	// The answer to cmd p survived too: the repeat is answered, not executed.
	if err := c.Plug(1); err != nil {
		t.Fatal(err)
	}
	acks := func() int {
		in.mu.Lock()
		defer in.mu.Unlock()
		n := 0
		for _, m := range in.msg[from:] {
			if a, ok := m.(charger.AckMsg); ok && a.CmdID == "p" && a.Result == charger.ResultAccepted {
				n++
			}
		}
		return n
	}
	send(t, b, start("p", 1, time.Now().Add(time.Minute), 0))
	waitFor(t, "repeat answered", func() bool { return acks() == 1 })
	if _, ok := c.Session(1); ok {
		t.Fatal("a repeated start was executed after the restart")
	}

	// The register goes on from where it was: a new session starts at (or
	// above) the power_loss register, never below.
	if got := c.Register(1); got != ended.MeterWh {
		t.Fatalf("register after restart = %d, want %d", got, ended.MeterWh)
	}
	q := runSession(t, b, in, c, "q")
	if q.MeterWh < ended.MeterWh {
		t.Fatalf("register went backwards across the restart: %d after %d", q.MeterWh, ended.MeterWh)
	}
	ackTxn(t, b, q.EventID)
	waitFor(t, "q started acked", func() bool { return len(c.Pending()) == 0 })

	// A clean shutdown is also the end of the process: session q ends with
	// power_loss at the next start; the acked s-p event is gone for good.
	_ = f2.Close()
	last, _ := in.maxMeter("s-q")
	f3 := nvmFleet(t, b, dir, nil, "SIM-1")
	c = f3.Charger("SIM-1")
	if c.Boots() != 3 || c.Register(1) < last {
		t.Fatalf("after the second restart: boots %d register %d, want 3 and ≥ %d", c.Boots(), c.Register(1), last)
	}
	p := c.Pending()
	if len(p) != 1 || p[0].SessionID != "s-q" || p[0].Reason != charger.EndPowerLoss || p[0].MeterWh < last {
		t.Fatalf("pending after the second restart = %+v, want one power_loss end of s-q ≥ %d Wh", p, last)
	}
	if c.Register(2) != 2000 {
		t.Fatalf("idle connector's register = %d, want 2000", c.Register(2))
	}
}

func TestUnackedTxnResentAfterRestart(t *testing.T) {
	b, in := nvmBroker(t, "SIM-1")
	dir := t.TempDir()
	f1 := nvmFleet(t, b, dir, nil, "SIM-1")
	started := runSession(t, b, in, f1.Charger("SIM-1"), "u") // never acked
	die(f1)

	from := in.len()
	f2 := nvmFleet(t, b, dir, nil, "SIM-1")
	c := f2.Charger("SIM-1")
	ended := firstTxn(t, in, from, "queued ended", func(e charger.TxnMsg) bool {
		return e.SessionID == "s-u" && e.Type == charger.TxnEnded
	})
	// In order: the started event (same event_id, as first sent) before the end.
	evs := in.txns(from)
	first := func(id string) int {
		for i, e := range evs {
			if e.EventID == id {
				return i
			}
		}
		return -1
	}
	si, ei := first(started.EventID), first(ended.EventID)
	if si < 0 || si > ei {
		t.Fatalf("started %s not re-sent before ended after the restart: %+v", started.EventID, evs)
	}
	e := evs[si]
	if !e.TS.Equal(started.TS) {
		t.Fatalf("re-sent started ts %v, originally %v", e.TS, started.TS)
	}
	if e.TS = started.TS; e != started {
		t.Fatalf("re-sent started %+v differs from the original %+v", evs[si], started)
	}
	if ended.Reason != charger.EndPowerLoss || !ended.Offline {
		t.Fatalf("ended = %+v", ended)
	}
	ackTxn(t, b, started.EventID)
	ackTxn(t, b, ended.EventID)
	waitFor(t, "queue acked", func() bool { return len(c.Pending()) == 0 })
}

func TestCorruptStateStartsFresh(t *testing.T) {
	b, in := nvmBroker(t, "SIM-1", "SIM-2")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "SIM-1.json"), []byte(`{"version":1,"charger_id":"SIM-1","regi`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "SIM-2.json"), 0o755); err != nil { // unreadable as a file
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	f := nvmFleet(t, b, dir, slog.New(slog.NewTextHandler(logs, nil)), "SIM-1", "SIM-2")
	for _, c := range f.Chargers() {
		if !c.Connected() || c.Boots() != 1 || len(c.Pending()) != 0 || c.Register(1) != 1000 {
			t.Fatalf("%s not fresh: connected %v boots %d pending %d register %d", c.ID(), c.Connected(), c.Boots(),
				len(c.Pending()), c.Register(1))
		}
		if !slices.ContainsFunc(strings.Split(logs.String(), "\n"), func(l string) bool {
			return strings.Contains(l, "unreadable") && strings.Contains(l, "charger="+c.ID()+" ")
		}) {
			t.Fatalf("unreadable state of %s not logged:\n%s", c.ID(), logs)
		}
		b, err := os.ReadFile(filepath.Join(dir, c.ID()+".json"))
		if err != nil || !json.Valid(b) {
			t.Fatalf("%s: state file not rewritten: %v %q", c.ID(), err, b)
		}
		if _, err := os.Stat(filepath.Join(dir, c.ID()+".json.corrupt")); err != nil {
			t.Fatalf("%s: unreadable state not kept aside: %v", c.ID(), err)
		}
	}
	// And it works: a session runs.
	runSession(t, b, in, f.Charger("SIM-1"), "c")
}

func TestNoStateDirWritesNothing(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	b, in := nvmBroker(t, "SIM-1")
	f := nvmFleet(t, b, "", nil, "SIM-1")
	c := f.Charger("SIM-1")
	runSession(t, b, in, c, "n")
	c.StopLocal(1)
	firstTxn(t, in, 0, "ended", func(e charger.TxnMsg) bool { return e.SessionID == "s-n" && e.Type == charger.TxnEnded })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.Reboot(ctx, true); err != nil {
		t.Fatal(err)
	}
	die(f)
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 0 {
		t.Fatalf("without StateDir the simulator wrote %v (%v)", entries, err)
	}
}
