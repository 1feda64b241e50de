package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/money"
)

// The scale scenario's fleet: C chargers speaking docs/protocol.md on fewer
// MQTT connections than chargers when the machine's limits require it (one
// process holds at most 20,000 open files here, and the embedded broker
// lives in the service's process). A "real" connection is one charger: its
// own client id, username and password, its own will, checked by the
// broker's ACL as in production. A "multiplexed" connection carries several
// charger ids: the broker's ACL lets a charger's account publish for that
// charger only (docs/protocol.md §1), so these connections use the
// service's own account, which may publish and subscribe anything under the
// prefix, and publish each charger's presence, status and meter samples on
// that charger's own topics. The service's cost is per charger and per
// message either way; what a multiplexed connection saves is the broker's
// per-connection cost (and a will per charger), which docs/bench.md states.
//
// Each charger has one connector. It answers every command (a repeated
// cmd_id gets the same answer), starts on a start, meters every
// scaleMeterEvery while charging, sends its status every scaleStatusEvery,
// keeps its txn events until down/txnack and re-sends them every
// scaleTxnResend, and ends with "remote" on a stop.

const (
	scaleMeterEvery  = 30 * time.Second // the meter period (docs/protocol.md §3: at least every 30 s)
	scaleStatusEvery = 2 * time.Minute  // the status heartbeat; the protocol sends status on change only
	scaleTxnResend   = 5 * time.Second  // the simulator's default (charger/sim)
	scalePowerW      = 7040             // the simulator's default charging power
)

// scaleCharger is one simulated charger of the fleet.
type scaleCharger struct {
	id   string
	conn *scaleConn

	mu         sync.Mutex
	session    string // the running session, "" when idle
	seq        int64
	register   int64 // Wh
	accum      int64 // W·ms not yet a whole Wh
	nextMeter  time.Time
	nextStatus time.Time
	nextResend time.Time
	status     string
	answers    map[string]charger.AckMsg // cmd_id → the answer given
	pending    []charger.TxnMsg          // txn events not acked yet
}

// scaleConn is one MQTT connection and the chargers it carries.
type scaleConn struct {
	real     bool // one charger on its own account
	clientID string
	chargers []*scaleCharger
	client   paho.Client
}

// scaleFleet is every connection and charger of the run.
type scaleFleet struct {
	topics   charger.Topics
	url      string
	conns    []*scaleConn
	chargers []*scaleCharger
	byID     map[string]*scaleCharger
	log      *slog.Logger

	// onMeter is called as a meter sample is published (session, register);
	// onCommand as a command reaches its charger.
	onMeter   func(session string, registerWh int64, at time.Time)
	onCommand func(chargerID string, cmd charger.Command, at time.Time)

	published       atomic.Int64 // messages published
	connects        atomic.Int64 // connections made, reconnections included
	subscribeFailed atomic.Int64 // subscriptions that failed (the connection was lost meanwhile)
	stop            chan struct{}
	wg              sync.WaitGroup
}

// scaleSplit is how C chargers are carried by n connections at most: all
// real when C ≤ n; otherwise a tenth of the connections (at least one)
// multiplex the chargers the real ones cannot carry.
func scaleSplit(c, n int) (real, mux int) {
	if c <= n {
		return c, 0
	}
	mux = max(1, n/10)
	return n - mux, mux
}

// newScaleFleet lays out the fleet: ids[i] is charger i; the first `real`
// chargers have real connections (client id = charger id), the rest are
// spread over mux connections on the service account (client ids
// <muxPrefix>-muxNNNNN).
func newScaleFleet(topics charger.Topics, url, muxPrefix string, ids []string, real, mux int, log *slog.Logger) *scaleFleet {
	f := &scaleFleet{topics: topics, url: url, byID: make(map[string]*scaleCharger, len(ids)), log: log, stop: make(chan struct{})}
	now := time.Now()
	for i, id := range ids {
		c := &scaleCharger{id: id, register: 1000, status: charger.StatusAvailable, answers: map[string]charger.AckMsg{},
			nextStatus: now.Add(time.Duration(mrand.Int64N(int64(scaleStatusEvery))))}
		f.chargers = append(f.chargers, c)
		f.byID[id] = c
		if i < real {
			conn := &scaleConn{real: true, clientID: id, chargers: []*scaleCharger{c}}
			c.conn = conn
			f.conns = append(f.conns, conn)
		}
	}
	rest := f.chargers[real:]
	for m := range mux {
		lo, hi := m*len(rest)/mux, (m+1)*len(rest)/mux
		conn := &scaleConn{clientID: fmt.Sprintf("%s-mux%05d", muxPrefix, m), chargers: rest[lo:hi]}
		for _, c := range conn.chargers {
			c.conn = conn
		}
		f.conns = append(f.conns, conn)
	}
	return f
}

// isReal reports whether charger id has a connection of its own.
func (f *scaleFleet) isReal(id string) bool {
	c := f.byID[id]
	return c != nil && c.conn.real
}

// connect opens every connection, width at a time, and returns when each
// is connected (a refused or slow CONNECT is retried by paho, as firmware
// does). password(id) is a real charger's password; service the account of
// the multiplexed ones.
func (f *scaleFleet) connect(ctx context.Context, width int, password func(id string) string, serviceUser, servicePass string) error {
	sem := make(chan struct{}, width)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for _, conn := range f.conns {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		user, pass := serviceUser, servicePass
		if conn.real {
			user, pass = conn.clientID, password(conn.clientID)
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f.open(ctx, conn, user, pass); err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, conn := range f.conns {
		f.wg.Go(func() { f.loop(conn) })
	}
	return nil
}

func (f *scaleFleet) open(ctx context.Context, conn *scaleConn, user, pass string) error {
	o := paho.NewClientOptions().SetStore(charger.NewPahoStore()).AddBroker(f.url).SetClientID(conn.clientID).SetUsername(user).SetPassword(pass).
		SetCleanSession(false).SetKeepAlive(30 * time.Second). // docs/protocol.md §1
		SetOrderMatters(true).                                 // handlers publish without waiting on tokens
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(2 * time.Second).SetConnectTimeout(30 * time.Second).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { f.onMessage(m) }).
		SetOnConnectHandler(func(cl paho.Client) { f.onConnect(conn, cl) })
	if conn.real {
		will, _ := charger.Encode(charger.StateMsg{Online: false, Reason: charger.OfflineLWT})
		o.SetBinaryWill(f.topics.State(conn.clientID), will, 1, true)
	}
	conn.client = paho.NewClient(o)
	t := conn.client.Connect()
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return fmt.Errorf("connect %s: %w", conn.clientID, ctx.Err())
	}
}

// onConnect subscribes to each charger's commands and publishes its
// retained online state, on every (re)connect, as firmware does.
func (f *scaleFleet) onConnect(conn *scaleConn, cl paho.Client) {
	filters := make(map[string]byte, len(conn.chargers))
	for _, c := range conn.chargers {
		filters[f.topics.Down(c.id)] = 1
	}
	go func() { // not on paho's connect goroutine: the SUBACK is read by it
		if t := cl.SubscribeMultiple(filters, nil); !t.WaitTimeout(60*time.Second) || t.Error() != nil {
			if f.subscribeFailed.Add(1) <= 3 {
				f.log.Warn("bench: scale fleet subscribe (the first 3 are logged, all counted)", "client", conn.clientID, "err", t.Error())
			}
		}
		f.connects.Add(1)
		for _, c := range conn.chargers {
			c.mu.Lock()
			f.publishState(c)
			c.mu.Unlock()
		}
	}()
}

func (f *scaleFleet) publishState(c *scaleCharger) {
	f.publish(c, f.topics.State(c.id), charger.StateMsg{Online: true, BootID: "bench-scale", Model: "chargeflow-bench", FW: "1.0",
		Connectors: []charger.ConnectorState{{ID: 1, Status: c.status}}, TS: time.Now().In(money.Beijing)}, true)
}

// publish sends m with QoS 1 without waiting for its PUBACK (paho keeps it
// and re-sends it after a reconnect).
func (f *scaleFleet) publish(c *scaleCharger, topic string, m charger.Message, retained bool) {
	b, err := charger.Encode(m)
	if err != nil {
		f.log.Error("bench: scale fleet encode", "err", err)
		return
	}
	c.conn.client.Publish(topic, 1, retained, b)
	f.published.Add(1)
}

// loop meters, heartbeats and re-sends for the chargers of one connection.
func (f *scaleFleet) loop(conn *scaleConn) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case now := <-t.C:
			for _, c := range conn.chargers {
				f.tick(c, now)
			}
		}
	}
}

func (f *scaleFleet) tick(c *scaleCharger, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session != "" && !now.Before(c.nextMeter) {
		c.nextMeter = c.nextMeter.Add(scaleMeterEvery)
		c.accum += scalePowerW * scaleMeterEvery.Milliseconds()
		c.register += c.accum / 3_600_000
		c.accum %= 3_600_000
		c.seq++
		at := time.Now()
		if f.onMeter != nil {
			f.onMeter(c.session, c.register, at)
		}
		f.publish(c, f.topics.Up(c.id, charger.KindMeter), charger.MeterMsg{SessionID: c.session, Connector: 1, Seq: c.seq,
			TS: at.In(money.Beijing), EnergyWh: c.register, PowerW: scalePowerW}, false)
	}
	if !now.Before(c.nextStatus) {
		c.nextStatus = c.nextStatus.Add(scaleStatusEvery)
		f.publish(c, f.topics.Up(c.id, charger.KindStatus), charger.StatusMsg{Connector: 1, Status: c.status, TS: now.In(money.Beijing)}, false)
	}
	if len(c.pending) > 0 && !now.Before(c.nextResend) {
		c.nextResend = now.Add(scaleTxnResend)
		for _, ev := range c.pending {
			f.publish(c, f.topics.Up(c.id, charger.KindTxn), ev, false)
		}
	}
}

func (f *scaleFleet) onMessage(m paho.Message) {
	id, kind, ok := f.topics.Parse(m.Topic())
	c := f.byID[id]
	if !ok || c == nil {
		return
	}
	msg, err := charger.Decode(kind, m.Payload())
	if err != nil {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch v := msg.(type) {
	case charger.TxnAck:
		for i, ev := range c.pending {
			if ev.EventID == v.EventID {
				c.pending = append(c.pending[:i], c.pending[i+1:]...)
				break
			}
		}
	case charger.Command:
		if f.onCommand != nil {
			f.onCommand(c.id, v, now)
		}
		f.command(c, v, now)
	}
}

func (f *scaleFleet) command(c *scaleCharger, cmd charger.Command, now time.Time) {
	if a, ok := c.answers[cmd.CmdID]; ok {
		f.publish(c, f.topics.Up(c.id, charger.KindAck), a, false) // the same answer, not executed again
		return
	}
	answer := func(a charger.AckMsg) {
		c.answers[a.CmdID] = a
		f.publish(c, f.topics.Up(c.id, charger.KindAck), a, false)
	}
	switch {
	case cmd.Type == charger.CmdStop:
		answer(charger.AckMsg{CmdID: cmd.CmdID, Result: charger.ResultAccepted})
		if c.session == cmd.SessionID {
			f.txn(c, charger.TxnMsg{SessionID: c.session, Connector: 1, Type: charger.TxnEnded, MeterWh: c.register, Reason: charger.EndRemote}, now)
			c.session, c.status = "", charger.StatusAvailable
			f.publish(c, f.topics.Up(c.id, charger.KindStatus), charger.StatusMsg{Connector: 1, Status: c.status, TS: now.In(money.Beijing)}, false)
		}
	case now.After(cmd.Deadline):
		answer(charger.AckMsg{CmdID: cmd.CmdID, Result: charger.ResultRejected, Reason: charger.RejectExpired})
	case c.session != "":
		answer(charger.AckMsg{CmdID: cmd.CmdID, Result: charger.ResultRejected, Reason: charger.RejectBusy})
	default:
		answer(charger.AckMsg{CmdID: cmd.CmdID, Result: charger.ResultAccepted})
		c.session, c.seq, c.status = cmd.SessionID, 0, charger.StatusCharging
		// The first sample at a random moment of the period's second
		// half, so that samples are spread, not in step, and each is at
		// least 15 s after the one before it: the feed publishes a meter
		// commit when it crosses a 15 s boundary (session.publishes).
		half := scaleMeterEvery / 2
		c.nextMeter = now.Add(half + time.Duration(mrand.Int64N(int64(half))))
		f.publish(c, f.topics.Up(c.id, charger.KindStatus), charger.StatusMsg{Connector: 1, Status: c.status, TS: now.In(money.Beijing)}, false)
		f.txn(c, charger.TxnMsg{SessionID: c.session, Connector: 1, Type: charger.TxnStarted, MeterWh: c.register}, now)
	}
}

func (f *scaleFleet) txn(c *scaleCharger, ev charger.TxnMsg, now time.Time) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	ev.EventID, ev.TS = hex.EncodeToString(id[:]), now.In(money.Beijing)
	c.pending = append(c.pending, ev)
	c.nextResend = now.Add(scaleTxnResend)
	f.publish(c, f.topics.Up(c.id, charger.KindTxn), ev, false)
}

// connected counts the connections that are up.
func (f *scaleFleet) connected() int {
	n := 0
	for _, conn := range f.conns {
		if conn.client != nil && conn.client.IsConnectionOpen() {
			n++
		}
	}
	return n
}

// close stops the loops and disconnects every connection (no will: a
// clean DISCONNECT), width at a time.
func (f *scaleFleet) close() {
	close(f.stop)
	f.wg.Wait()
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for _, conn := range f.conns {
		if conn.client == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			conn.client.Disconnect(50)
		})
	}
	wg.Wait()
}

// forget leaves nothing of the fleet on an external broker: every charger's
// retained state is cleared (an empty retained message, on one service
// connection) and every connection's persistent session dropped (a connect
// with the same client id and a clean session), width at a time.
func (f *scaleFleet) forget(b *bench, serviceUser, servicePass string, password func(id string) string) {
	if c, err := benchPaho(f.url, b.runID+"-scale-clear", serviceUser, servicePass); err != nil {
		fmt.Fprintf(b.stderr, "chargeflow bench: could not remove the retained charger states: %v\n", err)
	} else {
		var last paho.Token
		for _, ch := range f.chargers {
			last = c.Publish(f.topics.State(ch.id), 1, true, []byte{})
		}
		if last != nil && (!last.WaitTimeout(30*time.Second) || last.Error() != nil) {
			fmt.Fprintf(b.stderr, "chargeflow bench: could not remove the retained charger states: %v\n", last.Error())
		}
		c.Disconnect(100)
	}
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for _, conn := range f.conns {
		user, pass := serviceUser, servicePass
		if conn.real {
			user, pass = conn.clientID, password(conn.clientID)
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if c, err := benchPaho(f.url, conn.clientID, user, pass); err == nil {
				c.Disconnect(20)
			} else {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		fmt.Fprintf(b.stderr, "chargeflow bench: could not remove %d persistent sessions of the scale fleet\n", n)
	}
}
