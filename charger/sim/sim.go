// Package sim is a fleet of simulated chargers that speak the charger
// protocol (docs/protocol.md) against any MQTT broker, one real paho client
// per charger (clean session false, QoS 1, will on the state topic). Tests
// drive each Charger directly (plug, unplug, faults); `chargeflow sim` runs
// a fleet from the command line.
//
// Behaviour follows docs/protocol.md §3: every command is answered on up/ack with its
// cmd_id, a repeated cmd_id gets the stored answer and is not executed
// again, a start past its deadline is rejected with "expired", max_energy_wh
// ends the session with "energy_limit", txn events are kept in simulated
// non-volatile memory (which survives Reboot) and re-sent in order until
// down/txnack names them, with offline:true for events created while
// disconnected; meter is sent every MeterInterval with seq+1.
//
// With Config.StateDir the NVM is a file per charger (nvm.go), so chargers
// also survive a restart of the process that runs them: the register goes on
// from where it was, queued txn events are re-sent with their event_id, and
// sessions that were running end with "power_loss".
package sim

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/money"
)

// Config configures a fleet.
type Config struct {
	BrokerURL     string // tcp://…, ssl://… or mqtts://…
	Prefix        string // default "ev/v1"
	Chargers      []ChargerSpec
	MeterInterval time.Duration // default 10s (docs/protocol.md §3)
	PowerW        int64         // charging power, default 7040
	TxnResend     time.Duration // re-send period of unacked txn events, default 5s
	// Now is the fleet's clock (default time.Now); each charger adds its own skew.
	Now       func() time.Time
	Logger    *slog.Logger
	TLSConfig *tls.Config
	Model, FW string
	// ReconnectMax is the longest wait between two connection attempts
	// after a lost connection (paho doubles the wait from 1 s up to it;
	// default 2 s), and ReconnectJitter the most each attempt is delayed at
	// random on top (default 500 ms), as firmware does so that a fleet does
	// not reconnect in step after a broker restart.
	ReconnectMax, ReconnectJitter time.Duration
	// StateDir, when set, holds each charger's non-volatile memory as
	// <StateDir>/<id>.json, read at the first power-up and written on every
	// change (see nvm.go). Empty: the NVM lives in memory only.
	StateDir string
	// OnCommand, when set, is called with every well-formed command a
	// charger receives, as it receives it (under the charger's lock: keep it
	// cheap). Benchmarks time a start's arrival with it.
	OnCommand func(chargerID string, cmd charger.Command)
}

// ChargerSpec is one simulated charger.
type ChargerSpec struct {
	ID         string
	Password   string
	Connectors []int // default [1]
}

// Fleet is a set of chargers. Its methods are safe for concurrent use.
type Fleet struct {
	chargers []*Charger
}

// New validates cfg and returns a fleet of powered-off chargers.
func New(cfg Config) (*Fleet, error) {
	if cfg.BrokerURL == "" {
		return nil, errors.New("sim: BrokerURL is required")
	}
	cfg.MeterInterval = or(cfg.MeterInterval, 10*time.Second)
	cfg.PowerW = or(cfg.PowerW, 7040)
	cfg.TxnResend = or(cfg.TxnResend, 5*time.Second)
	cfg.ReconnectMax = or(cfg.ReconnectMax, 2*time.Second)
	cfg.ReconnectJitter = or(cfg.ReconnectJitter, 500*time.Millisecond)
	cfg.Model, cfg.FW = or(cfg.Model, "chargeflow-sim"), or(cfg.FW, "1.0")
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StateDir != "" {
		if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
			return nil, fmt.Errorf("sim: state dir: %w", err)
		}
	}
	f := &Fleet{}
	seen := map[string]bool{}
	for _, s := range cfg.Chargers {
		if !charger.ValidChargerID(s.ID) || seen[s.ID] {
			return nil, fmt.Errorf("sim: invalid or repeated charger id %q", s.ID)
		}
		seen[s.ID] = true
		f.chargers = append(f.chargers, newCharger(cfg, s))
	}
	return f, nil
}

// Start powers every charger on and waits until each is connected,
// subscribed and has published its online state.
func (f *Fleet) Start(ctx context.Context) error {
	for _, c := range f.chargers {
		if err := c.PowerOn(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Charger returns the charger with id, or nil.
func (f *Fleet) Charger(id string) *Charger {
	for _, c := range f.chargers {
		if c.id == id {
			return c
		}
	}
	return nil
}

// Chargers returns all chargers in configuration order.
func (f *Fleet) Chargers() []*Charger { return slices.Clone(f.chargers) }

// Close shuts every charger down cleanly (offline "shutdown", DISCONNECT).
func (f *Fleet) Close() error {
	var wg sync.WaitGroup
	for _, c := range f.chargers {
		wg.Add(1)
		go func() { defer wg.Done(); c.Shutdown() }()
	}
	wg.Wait()
	return nil
}

// SessionInfo is a running session on one connector.
type SessionInfo struct {
	ID          string
	Connector   int
	StartWh     int64
	MaxEnergyWh int64
	Seq         int64
}

type connector struct {
	plugged bool
	status  string
	sess    *SessionInfo
	accum   int64 // W·ms not yet a whole Wh
}

// nvm is what survives a reboot ("non-volatile memory"); with
// Config.StateDir it is also kept in a file (nvm.go).
type nvm struct {
	pending     []charger.TxnMsg          // txn events not yet acked, in creation order
	answers     map[string]charger.AckMsg // cmd_id → answer given
	answerOrder []string                  // cmd_ids in answer order (the file keeps the last maxAnswers)
	register    map[int]int64             // energy register per connector (Wh)
	sessions    map[int]*SessionInfo      // running sessions, kept across a reboot without ending
	boots       int64                     // power-ups so far
}

// power is one power-up of a charger: its MQTT client and loop.
type power struct {
	client    paho.Client
	bootID    string
	killed    atomic.Bool
	connMu    sync.Mutex
	conn      net.Conn
	stop      chan struct{}
	wg        sync.WaitGroup
	connected atomic.Bool
	ready     chan struct{} // closed after the first successful OnConnect
	readyOnce sync.Once
	connTok   paho.Token // the first Connect's; set before tokSet is closed
	tokSet    chan struct{}
	// dialErr is the last failed dial's error; certRefused is closed when a
	// dial failed because the broker's certificate was refused.
	dialErr     atomic.Pointer[error]
	certRefused chan struct{}
	refuseOnce  sync.Once
}

// Charger is one simulated charger. Its methods are safe for concurrent use.
type Charger struct {
	id, password string
	cfg          Config
	topics       charger.Topics
	log          *slog.Logger

	mu          sync.Mutex // guards everything below
	nvm         nvm
	loaded      bool // the state file has been read (first power-up)
	saveFailing bool // the last write of the state file failed (logged once)
	conns       map[int]*connector
	connIDs     []int
	pw          *power // nil while off
	commands    []charger.Command
	received    []string // raw cmd payloads that did not decode
	// faults
	rejectStart string
	neverStart  bool
	duplicate   bool
	skew        time.Duration
	unreachable atomic.Bool // connection attempts fail (network.go)
}

func newCharger(cfg Config, s ChargerSpec) *Charger {
	ids := s.Connectors
	if len(ids) == 0 {
		ids = []int{1}
	}
	c := &Charger{id: s.ID, password: s.Password, cfg: cfg, topics: charger.Topics{Prefix: cfg.Prefix},
		log:   cfg.Logger.With("charger", s.ID),
		nvm:   nvm{answers: map[string]charger.AckMsg{}, register: map[int]int64{}, sessions: map[int]*SessionInfo{}},
		conns: map[int]*connector{}, connIDs: slices.Sorted(slices.Values(ids))}
	for _, id := range ids {
		c.conns[id] = &connector{status: charger.StatusAvailable}
		c.nvm.register[id] = 1000 * int64(id) // a used meter, not a fresh one
	}
	return c
}

// ID returns the charger id.
func (c *Charger) ID() string { return c.id }

var beijing = money.Beijing

// now is the charger's own clock: the fleet clock plus its skew, in Beijing time.
func (c *Charger) nowLocked() time.Time { return c.cfg.Now().Add(c.skew).In(beijing) }

// PowerOn boots the charger: new boot id, new MQTT client, connect,
// subscribe down/#, publish the retained online state, re-send pending txn
// events. It returns once connected and ready, or ctx is done (the charger
// keeps trying in the background then; Kill or Shutdown stops it). When
// the broker's TLS certificate is refused (not signed by a CA of
// Config.TLSConfig, or naming another host) it returns that error at once,
// and keeps trying in the background too.
func (c *Charger) PowerOn(ctx context.Context) error {
	c.mu.Lock()
	if c.pw != nil {
		c.mu.Unlock()
		return nil
	}
	if !c.loaded {
		c.loaded = true
		c.loadLocked()
	}
	c.nvm.boots++
	c.saveLocked()
	p := &power{bootID: newID(), stop: make(chan struct{}), ready: make(chan struct{}), tokSet: make(chan struct{}),
		certRefused: make(chan struct{})}
	// Sessions that survived a reboot (Reboot(false)) resume charging.
	for cid, s := range c.nvm.sessions {
		if cn := c.conns[cid]; cn != nil {
			cn.sess, cn.plugged, cn.status = s, true, charger.StatusCharging
		}
	}
	will, _ := json.Marshal(charger.StateMsg{Online: false, Reason: charger.OfflineLWT})
	opts := paho.NewClientOptions().
		AddBroker(c.cfg.BrokerURL).
		SetClientID(c.id).SetUsername(c.id).SetPassword(c.password).
		SetCleanSession(false).
		SetKeepAlive(30*time.Second).
		SetStore(charger.NewPahoStore()). // re-sends after a reconnect go out in order
		SetBinaryWill(c.topics.State(c.id), will, 1, true).
		SetOrderMatters(true). // handlers publish without waiting on tokens, so no deadlock
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { c.onMessage(p, m) }).
		SetOnConnectHandler(func(cl paho.Client) { c.onConnect(p, cl) }).
		SetConnectionLostHandler(func(paho.Client, error) { p.connected.Store(false) }).
		SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(c.cfg.ReconnectMax).
		SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) { c.reconnectJitter(p) }).
		SetCustomOpenConnectionFn(func(u *url.URL, o paho.ClientOptions) (net.Conn, error) { return c.dial(p, u) })
	p.client = paho.NewClient(opts)
	c.pw = p
	c.mu.Unlock()

	p.connTok = p.client.Connect() // with ConnectRetry the token completes only when connected; readiness is p.ready
	close(p.tokSet)
	p.wg.Add(1)
	go c.loop(p)
	select {
	case <-p.ready:
		return nil
	case <-p.certRefused:
		return fmt.Errorf("sim: %s: power on: the broker's certificate is not trusted (check the CA file): %w", c.id, *p.dialErr.Load())
	case <-ctx.Done():
		if last := p.dialErr.Load(); last != nil {
			return fmt.Errorf("sim: %s: power on: %w (last connection error: %w)", c.id, ctx.Err(), *last)
		}
		return fmt.Errorf("sim: %s: power on: %w", c.id, ctx.Err())
	}
}

func (c *Charger) onConnect(p *power, cl paho.Client) {
	if p.killed.Load() {
		return
	}
	tok := cl.Subscribe(c.topics.Down(c.id), 1, nil)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		c.log.Warn("sim: subscribe failed", "err", tok.Error())
		return
	}
	if code := tok.(*paho.SubscribeToken).Result()[c.topics.Down(c.id)]; code > 2 {
		c.log.Warn("sim: subscribe refused", "code", code)
		return
	}
	// On the first connect, paho resumes its store after calling this
	// handler, and sets the DUP flag of every publish it finds there even
	// while sending it (a data race): publish only once that is over.
	// (On a reconnect the token is long done.)
	select {
	case <-p.tokSet:
	case <-p.stop:
		return
	}
	select {
	case <-p.connTok.Done():
	case <-p.stop:
		return
	}
	p.connected.Store(true)
	c.mu.Lock()
	if c.pw == p {
		c.publishStateLocked(p)
		c.resendLocked(p)
	}
	c.mu.Unlock()
	p.readyOnce.Do(func() { close(p.ready) })
}

func (c *Charger) publishStateLocked(p *power) {
	st := charger.StateMsg{Online: true, BootID: p.bootID, Model: c.cfg.Model, FW: c.cfg.FW, TS: c.nowLocked()}
	for _, id := range c.connIDs {
		st.Connectors = append(st.Connectors, charger.ConnectorState{ID: id, Status: c.conns[id].status})
	}
	c.publishLocked(p, c.topics.State(c.id), st, true)
}

// publishLocked sends m with QoS 1 without waiting for the PUBACK (paho
// keeps it and re-sends it after a reconnect); twice with the Duplicate fault.
func (c *Charger) publishLocked(p *power, topic string, m charger.Message, retained bool) {
	b, err := charger.Encode(m)
	if err != nil {
		c.log.Error("sim: encode", "err", err)
		return
	}
	n := 1
	if c.duplicate {
		n = 2
	}
	for range n {
		p.client.Publish(topic, 1, retained, b)
	}
}

func (c *Charger) resendLocked(p *power) {
	for _, ev := range c.nvm.pending {
		c.publishLocked(p, c.topics.Up(c.id, charger.KindTxn), ev, false)
	}
}

// loop meters running sessions and re-sends unacked txn events.
func (c *Charger) loop(p *power) {
	defer p.wg.Done()
	meter := time.NewTicker(c.cfg.MeterInterval)
	resend := time.NewTicker(c.cfg.TxnResend)
	defer meter.Stop()
	defer resend.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-meter.C:
			c.mu.Lock()
			if c.pw == p {
				c.meterLocked(p)
			}
			c.mu.Unlock()
		case <-resend.C:
			c.mu.Lock()
			if c.pw == p && p.connected.Load() {
				c.resendLocked(p)
			}
			c.mu.Unlock()
		}
	}
}

func (c *Charger) meterLocked(p *power) {
	metering := false
	for _, id := range c.connIDs {
		cn := c.conns[id]
		if cn.sess == nil {
			continue
		}
		metering = true
		cn.accum += c.cfg.PowerW * c.cfg.MeterInterval.Milliseconds()
		c.nvm.register[id] += cn.accum / 3_600_000
		cn.accum %= 3_600_000
		cn.sess.Seq++
	}
	if !metering {
		return
	}
	c.saveLocked() // the NVM is never behind a sample the cloud has seen
	for _, id := range c.connIDs {
		cn := c.conns[id]
		if cn.sess == nil {
			continue
		}
		s := cn.sess
		c.publishLocked(p, c.topics.Up(c.id, charger.KindMeter), charger.MeterMsg{SessionID: s.ID, Connector: id,
			Seq: s.Seq, TS: c.nowLocked(), EnergyWh: c.nvm.register[id], PowerW: c.cfg.PowerW}, false)
		if s.MaxEnergyWh > 0 && c.nvm.register[id]-s.StartWh >= s.MaxEnergyWh {
			c.endLocked(p, id, charger.EndEnergyLimit)
		}
	}
}

func (c *Charger) onMessage(p *power, m paho.Message) {
	if p.killed.Load() {
		return
	}
	_, kind, ok := c.topics.Parse(m.Topic())
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pw != p {
		return
	}
	switch kind {
	case charger.KindTxnAck:
		msg, err := charger.Decode(kind, m.Payload())
		if err != nil {
			return
		}
		id := msg.(charger.TxnAck).EventID
		n := len(c.nvm.pending)
		c.nvm.pending = slices.DeleteFunc(c.nvm.pending, func(e charger.TxnMsg) bool { return e.EventID == id })
		if len(c.nvm.pending) != n {
			c.saveLocked()
		}
	case charger.KindCmd:
		c.commandLocked(p, m.Payload())
	}
}

func (c *Charger) commandLocked(p *power, payload []byte) {
	msg, err := charger.Decode(charger.KindCmd, payload)
	if err != nil {
		c.received = append(c.received, string(payload))
		var raw struct {
			CmdID string `json:"cmd_id"`
		}
		if json.Unmarshal(payload, &raw) == nil && raw.CmdID != "" {
			c.answerLocked(p, charger.AckMsg{CmdID: raw.CmdID, Result: charger.ResultRejected, Reason: charger.RejectBadRequest})
		}
		return
	}
	cmd := msg.(charger.Command)
	if c.cfg.OnCommand != nil {
		c.cfg.OnCommand(c.id, cmd)
	}
	c.commands = append(c.commands, cmd)
	if prev, ok := c.nvm.answers[cmd.CmdID]; ok {
		c.publishLocked(p, c.topics.Up(c.id, charger.KindAck), prev, false) // same answer, not executed again
		return
	}
	reject := func(reason string) {
		c.answerLocked(p, charger.AckMsg{CmdID: cmd.CmdID, Result: charger.ResultRejected, Reason: reason})
	}
	if cmd.Type == charger.CmdStop {
		c.answerLocked(p, charger.AckMsg{CmdID: cmd.CmdID, Result: charger.ResultAccepted})
		for _, id := range c.connIDs {
			if s := c.conns[id].sess; s != nil && s.ID == cmd.SessionID {
				c.endLocked(p, id, charger.EndRemote)
			}
		}
		return
	}
	cn := c.conns[cmd.Connector]
	switch {
	case c.nowLocked().After(cmd.Deadline):
		reject(charger.RejectExpired)
	case c.rejectStart != "":
		reject(c.rejectStart)
	case cn == nil:
		reject(charger.RejectUnknownConnector)
	case cn.status == charger.StatusFaulted:
		reject(charger.RejectFaulted)
	case cn.sess != nil:
		reject(charger.RejectBusy)
	case !cn.plugged:
		reject(charger.RejectNotPlugged)
	default:
		c.answerLocked(p, charger.AckMsg{CmdID: cmd.CmdID, Result: charger.ResultAccepted})
		if c.neverStart {
			return
		}
		s := &SessionInfo{ID: cmd.SessionID, Connector: cmd.Connector, StartWh: c.nvm.register[cmd.Connector],
			MaxEnergyWh: cmd.MaxEnergyWh}
		cn.sess = s
		c.nvm.sessions[cmd.Connector] = s
		c.setStatusLocked(p, cmd.Connector, charger.StatusCharging)
		c.txnLocked(p, charger.TxnMsg{SessionID: s.ID, Connector: cmd.Connector, Type: charger.TxnStarted,
			MeterWh: s.StartWh})
	}
}

func (c *Charger) answerLocked(p *power, a charger.AckMsg) {
	if _, ok := c.nvm.answers[a.CmdID]; !ok {
		c.nvm.answerOrder = append(c.nvm.answerOrder, a.CmdID)
	}
	c.nvm.answers[a.CmdID] = a
	c.saveLocked() // kept before it is sent
	c.publishLocked(p, c.topics.Up(c.id, charger.KindAck), a, false)
}

// txnLocked keeps a new txn event in NVM and sends it (offline:true when
// created while disconnected; it goes out on reconnect).
func (c *Charger) txnLocked(p *power, ev charger.TxnMsg) {
	ev.EventID = newID()
	ev.TS = c.nowLocked()
	ev.Offline = p == nil || !p.connected.Load()
	c.nvm.pending = append(c.nvm.pending, ev)
	c.saveLocked() // kept before it is sent (with the session change that made it)
	if p != nil {
		c.publishLocked(p, c.topics.Up(c.id, charger.KindTxn), ev, false)
	}
}

func (c *Charger) endLocked(p *power, connector int, reason string) {
	cn := c.conns[connector]
	s := cn.sess
	if s == nil {
		return
	}
	cn.sess = nil
	delete(c.nvm.sessions, connector)
	c.txnLocked(p, charger.TxnMsg{SessionID: s.ID, Connector: connector, Type: charger.TxnEnded,
		MeterWh: c.nvm.register[connector], Reason: reason})
	next := charger.StatusAvailable
	if cn.plugged {
		next = charger.StatusFinishing
	}
	c.setStatusLocked(p, connector, next)
}

func (c *Charger) setStatusLocked(p *power, connector int, status string) {
	c.conns[connector].status = status
	if p != nil {
		c.publishLocked(p, c.topics.Up(c.id, charger.KindStatus), charger.StatusMsg{Connector: connector,
			Status: status, TS: c.nowLocked()}, false)
	}
}

// Plug connects a car to the connector (status preparing).
func (c *Charger) Plug(connector int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cn := c.conns[connector]
	if cn == nil {
		return fmt.Errorf("sim: %s has no connector %d", c.id, connector)
	}
	cn.plugged = true
	if cn.sess == nil {
		c.setStatusLocked(c.pw, connector, charger.StatusPreparing)
	}
	return nil
}

// Unplug disconnects the car; a running session ends with "ev_disconnected".
func (c *Charger) Unplug(connector int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cn := c.conns[connector]
	if cn == nil {
		return fmt.Errorf("sim: %s has no connector %d", c.id, connector)
	}
	cn.plugged = false
	if cn.sess != nil {
		c.endLocked(c.pw, connector, charger.EndEVDisconnected)
	}
	c.setStatusLocked(c.pw, connector, charger.StatusAvailable)
	return nil
}

// StopLocal ends the session on connector as if by the button ("local").
func (c *Charger) StopLocal(connector int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conns[connector] != nil {
		c.endLocked(c.pw, connector, charger.EndLocal)
	}
}

// RejectStart makes every start be rejected with reason ("" clears it).
func (c *Charger) RejectStart(reason string) { c.mu.Lock(); c.rejectStart = reason; c.mu.Unlock() }

// NeverStart makes starts be accepted but never begin charging.
func (c *Charger) NeverStart(on bool) { c.mu.Lock(); c.neverStart = on; c.mu.Unlock() }

// Duplicate makes the charger send every message twice.
func (c *Charger) Duplicate(on bool) { c.mu.Lock(); c.duplicate = on; c.mu.Unlock() }

// ClockSkew sets how far the charger's clock is off (positive: ahead).
func (c *Charger) ClockSkew(d time.Duration) { c.mu.Lock(); c.skew = d; c.mu.Unlock() }

// ResetMeter sets every energy register to zero (a register going backwards).
func (c *Charger) ResetMeter() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.nvm.register {
		c.nvm.register[id] = 0
	}
	c.saveLocked()
}

// Kill cuts the network and stops the charger without an MQTT DISCONNECT,
// so the broker publishes its will. Sessions stay in NVM (see PowerOn).
func (c *Charger) Kill() {
	c.mu.Lock()
	p := c.pw
	c.pw = nil
	for _, cn := range c.conns {
		cn.sess = nil // volatile state is gone; NVM keeps the sessions
	}
	c.mu.Unlock()
	if p == nil {
		return
	}
	p.killed.Store(true) // from now on nothing is written: no DISCONNECT, so the will fires
	close(p.stop)
	p.wg.Wait()
	p.client.Disconnect(0)
	p.connMu.Lock()
	if p.conn != nil {
		p.conn.Close()
	}
	p.connMu.Unlock()
}

// Reboot is a power cycle: Kill, then (if endSessions) running sessions
// end with "reboot" as events queued while offline, then PowerOn, which
// sends the queue. Without endSessions, sessions resume after the boot.
func (c *Charger) Reboot(ctx context.Context, endSessions bool) error {
	c.Kill()
	if endSessions {
		c.mu.Lock()
		for _, id := range c.connIDs {
			if s := c.nvm.sessions[id]; s != nil {
				c.conns[id].sess = s
				c.endLocked(nil, id, charger.EndReboot)
			}
		}
		c.mu.Unlock()
	}
	return c.PowerOn(ctx)
}

// Shutdown is a clean power-off: retained offline state "shutdown", then
// DISCONNECT (no will).
func (c *Charger) Shutdown() {
	c.mu.Lock()
	p := c.pw
	c.pw = nil
	if p != nil && p.connected.Load() {
		b, _ := charger.Encode(charger.StateMsg{Online: false, Reason: charger.OfflineShutdown})
		tok := p.client.Publish(c.topics.State(c.id), 1, true, b)
		c.mu.Unlock()
		tok.WaitTimeout(2 * time.Second)
	} else {
		c.mu.Unlock()
	}
	if p == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
	p.client.Disconnect(250)
	p.killed.Store(true)
}

// Connected reports whether the charger is powered and connected.
func (c *Charger) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pw != nil && c.pw.connected.Load()
}

// BootID is the current power-up's id ("" while off).
func (c *Charger) BootID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pw == nil {
		return ""
	}
	return c.pw.bootID
}

// Commands returns every command received and decoded, repeats included.
func (c *Charger) Commands() []charger.Command {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.commands)
}

// Session returns the running session on connector.
func (c *Charger) Session(connector int) (SessionInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cn := c.conns[connector]; cn != nil && cn.sess != nil {
		return *cn.sess, true
	}
	return SessionInfo{}, false
}

// Pending returns the txn events not yet acknowledged, oldest first.
func (c *Charger) Pending() []charger.TxnMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nvm.pending)
}

// Boots returns how many times the charger has powered up (kept in NVM).
func (c *Charger) Boots() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nvm.boots
}

// Register returns the energy register of connector (Wh).
func (c *Charger) Register(connector int) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nvm.register[connector]
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
