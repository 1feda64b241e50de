package charger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Credentials gives the embedded broker each charger's password hash
// (from the charger registry; hashes as made by HashPassword). ok is false
// for an unknown charger; err means the registry could not be asked (the
// connection is refused; the charger retries).
type Credentials interface {
	ChargerPasswordHash(ctx context.Context, chargerID string) (hash string, ok bool, err error)
}

// EmbeddedConfig configures the embedded broker.
type EmbeddedConfig struct {
	ListenAddr string // e.g. ":1883"; ":0" picks a free port (see Addr)
	// TLSListenAddr, when set, is a second listener speaking MQTT over TLS
	// with TLSConfig (a server configuration, e.g. CertReloader's), with the
	// same auth and ACL; ":0" picks a free port (see TLSAddr).
	TLSListenAddr string
	TLSConfig     *tls.Config
	Prefix        string // topic prefix, default "ev/v1"
	// ServiceUsername/ServicePassword is chargeflow's own account for tools
	// that connect from outside (empty username: no such account). It may use
	// everything under the prefix, $share included.
	ServiceUsername, ServicePassword string
	Credentials                      Credentials // required
	Logger                           *slog.Logger
	// HandlerTimeout bounds one Handler call, which runs on the charger's
	// connection goroutine (default 5s).
	HandlerTimeout time.Duration
	// Session limits, so that persistent 3.1.1 sessions of chargers that
	// never return do not grow forever (defaults 24h, 1024, 24h).
	MaxSessionExpiry time.Duration
	MaxInflight      uint16
	MaxMessageExpiry time.Duration
	Now              func() time.Time // receive-time clock, default time.Now
	// StorePath, when set, is a bbolt file where the broker keeps its state
	// across a restart (mochi's own storage hook): client sessions,
	// subscriptions, in-flight QoS 1 messages and retained messages
	// (persist.go). Empty: all of it lives in memory.
	StorePath string
}

// EmbeddedBroker is the Link for --dev and single-node use: a mochi MQTT
// broker inside chargeflow. Chargers connect to it directly; chargeflow
// itself is the broker, so "the handler ran before the PUBACK" is exact:
// inbound charger messages are handed to the Handler from mochi's OnPublish
// hook, before mochi writes the PUBACK. If the Handler fails, the publish is
// rejected (no PUBACK) and the charger's connection is dropped, so its
// client re-sends the message on reconnect. Per-charger order is the
// publisher's own order (one connection, one reading goroutine), and a
// per-charger lock keeps it across a session takeover. Wills (which mochi
// publishes without OnPublish) reach the Handler from OnWillSent.
//
// Auth: username = client id = charger id, password checked against the
// registry's hash; the ACL is docs/protocol.md §1's (see acl.go). No allow-all hook is
// ever installed (mochi ORs hook answers).
type EmbeddedBroker struct {
	cfg    EmbeddedConfig
	topics Topics
	log    *slog.Logger
	now    func() time.Time

	mu      sync.Mutex // guards server, h, ctx, state
	server  *mqtt.Server
	h       Handler
	ctx     context.Context
	cancel  context.CancelFunc
	started bool
	closed  bool

	locks sync.Map // charger id → *sync.Mutex, serialises handler calls per charger
	auth  *verifier
	// pubMu: Close waits for publishes in progress, so none reaches the
	// storage hook after mochi stopped it.
	pubMu sync.RWMutex
}

var _ Link = (*EmbeddedBroker)(nil)

// NewEmbeddedBroker validates cfg and returns an unstarted broker.
func NewEmbeddedBroker(cfg EmbeddedConfig) (*EmbeddedBroker, error) {
	if cfg.Credentials == nil {
		return nil, errors.New("embedded broker: Credentials are required")
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = ":1883"
	}
	if cfg.TLSListenAddr != "" && cfg.TLSConfig == nil {
		return nil, errors.New("embedded broker: a TLS listener needs a TLSConfig")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &EmbeddedBroker{cfg: cfg, topics: Topics{Prefix: cfg.Prefix}, now: cfg.Now,
		log: loggerOr(cfg.Logger).With("component", "mqtt-broker"), ctx: ctx, cancel: cancel,
		auth: newVerifier(cfg.Credentials, runtime.GOMAXPROCS(0))}, nil
}

// Start binds the listener (a taken port fails here) and starts serving.
func (b *EmbeddedBroker) Start(ctx context.Context, h Handler) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started || b.closed {
		return errors.New("embedded broker: already started or closed")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumSessionExpiryInterval = uint32(orDefault(b.cfg.MaxSessionExpiry, 24*time.Hour) / time.Second)
	caps.MaximumInflight = orDefault(b.cfg.MaxInflight, 1024)
	// mochi gives every connection a queue of this many pending writes,
	// allocated at connect (8,192 pointers, 64 KiB, by default: 256 MiB for
	// 4,000 chargers, docs/bench.md "The operator-scale scenarios on every
	// stack"). Every QoS 1 message waiting there is also in flight, so the
	// in-flight bound above is already the bound that matters: a queue as
	// long as it refuses nothing the in-flight quota would not.
	caps.MaximumClientWritesPending = int32(caps.MaximumInflight)
	caps.MaximumMessageExpiryInterval = int64(orDefault(b.cfg.MaxMessageExpiry, 24*time.Hour) / time.Second)
	s := mqtt.New(&mqtt.Options{Capabilities: caps, InlineClient: true, Logger: b.log})
	if err := s.AddHook(&brokerHook{b: b}, nil); err != nil {
		return fmt.Errorf("embedded broker: add hook: %w", err)
	}
	if err := b.addStoreHook(s); err != nil {
		return err
	}
	// plain TCP through our listener, which closes every connection it accepted (tlslistener.go)
	if err := s.AddListener(newTLSListener("tcp", b.cfg.ListenAddr, nil, 0, b.log)); err != nil {
		return fmt.Errorf("embedded broker: listen %s: %w", b.cfg.ListenAddr, err)
	}
	if b.cfg.TLSListenAddr != "" {
		l := newTLSListener("tls", b.cfg.TLSListenAddr, b.cfg.TLSConfig, 10*time.Second, b.log)
		if err := s.AddListener(l); err != nil {
			_ = s.Close()
			return fmt.Errorf("embedded broker: listen (TLS) %s: %w", b.cfg.TLSListenAddr, err)
		}
	}
	b.h = h
	if err := s.Serve(); err != nil {
		_ = s.Close()
		return fmt.Errorf("embedded broker: serve: %w", err)
	}
	b.server = s
	b.started = true
	b.log.Info("embedded mqtt broker listening", "addr", b.addrLocked(), "tls_addr", b.listenerAddrLocked("tls"))
	return nil
}

// Addr is the listener's actual address (useful with ":0"), "" before Start.
func (b *EmbeddedBroker) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addrLocked()
}

func (b *EmbeddedBroker) addrLocked() string { return b.listenerAddrLocked("tcp") }

func (b *EmbeddedBroker) listenerAddrLocked(id string) string {
	if b.server == nil {
		return ""
	}
	l, ok := b.server.Listeners.Get(id)
	if !ok {
		return ""
	}
	return l.Address()
}

// TLSAddr is the TLS listener's actual address, "" before Start or without one.
func (b *EmbeddedBroker) TLSAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.listenerAddrLocked("tls")
}

// URL is a tcp:// URL for clients on this host, "" before Start.
func (b *EmbeddedBroker) URL() string { return localURL("tcp", b.Addr()) }

// TLSURL is an ssl:// URL of the TLS listener for clients on this host
// (its certificate must name 127.0.0.1), "" before Start or without one.
func (b *EmbeddedBroker) TLSURL() string { return localURL("ssl", b.TLSAddr()) }

func localURL(scheme, addr string) string {
	if addr == "" {
		return ""
	}
	_, port, _ := net.SplitHostPort(addr)
	return scheme + "://127.0.0.1:" + port
}

// SendCommand puts c into the charger's session (QoS 1, not retained); the
// broker re-sends it until the charger acknowledges it, across reconnects.
// A charger that never connected has no session and gets nothing (as with
// any broker).
func (b *EmbeddedBroker) SendCommand(_ context.Context, chargerID string, c Command) error {
	payload, err := Encode(c)
	if err != nil {
		return fmt.Errorf("send command: %w", err)
	}
	return b.publish(chargerID, b.topics.Cmd(chargerID), payload)
}

// AckTxn sends down/txnack for eventID (QoS 1).
func (b *EmbeddedBroker) AckTxn(_ context.Context, chargerID, eventID string) error {
	payload, err := Encode(TxnAck{EventID: eventID})
	if err != nil {
		return fmt.Errorf("ack txn: %w", err)
	}
	return b.publish(chargerID, b.topics.TxnAck(chargerID), payload)
}

func (b *EmbeddedBroker) publish(cp, topic string, payload []byte) error {
	if !ValidChargerID(cp) {
		return fmt.Errorf("publish %s: invalid charger id %q", topic, cp)
	}
	b.pubMu.RLock()
	defer b.pubMu.RUnlock()
	b.mu.Lock()
	s, ok := b.server, b.started && !b.closed
	b.mu.Unlock()
	if !ok {
		return fmt.Errorf("publish %s: broker not running", topic)
	}
	if err := s.Publish(topic, payload, false, 1); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

// Close stops handler delivery, disconnects every client, closes the
// listener and waits for the connection goroutines. Idempotent (mochi's own
// Close panics the second time).
func (b *EmbeddedBroker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	s := b.server
	b.mu.Unlock()
	b.cancel()     // handlers in progress see ctx done; wills fired by our own shutdown are not delivered
	b.pubMu.Lock() // publishes in progress end; later ones see closed
	b.pubMu.Unlock()
	if s != nil {
		return s.Close()
	}
	return nil
}

func (b *EmbeddedBroker) running() (Handler, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.h, b.started && !b.closed
}

func (b *EmbeddedBroker) lock(cp string) *sync.Mutex {
	m, _ := b.locks.LoadOrStore(cp, &sync.Mutex{})
	return m.(*sync.Mutex)
}

// deliver runs the handler for one charger message on the caller's goroutine.
func (b *EmbeddedBroker) deliver(in Inbound) error {
	h, ok := b.running()
	if !ok {
		return errors.New("broker closing")
	}
	mu := b.lock(in.ChargerID)
	mu.Lock()
	defer mu.Unlock()
	ctx, cancel := context.WithTimeout(b.ctx, orDefault(b.cfg.HandlerTimeout, 5*time.Second))
	defer cancel()
	return h(ctx, in)
}

// brokerHook is our auth, ACL and hand-off hook. Its methods run on mochi's
// client goroutines.
type brokerHook struct {
	mqtt.HookBase
	b *EmbeddedBroker
}

func (h *brokerHook) ID() string { return "chargeflow" }

func (h *brokerHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnWillSent}, []byte{b})
}

func (h *brokerHook) isService(username string) bool {
	return h.b.cfg.ServiceUsername != "" && username == h.b.cfg.ServiceUsername
}

// OnConnectAuthenticate admits chargeflow's service account and registered
// chargers whose client id equals their username and whose will, if any, is
// their own state topic.
func (h *brokerHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user, pw := string(pk.Connect.Username), string(pk.Connect.Password)
	log := h.b.log.With("client", cl.ID, "username", user, "remote", cl.Net.Remote)
	if h.isService(user) {
		// Compare digests so the comparison does not leak the password's length.
		a, c := sha256.Sum256([]byte(pw)), sha256.Sum256([]byte(h.b.cfg.ServicePassword))
		ok := subtle.ConstantTimeCompare(a[:], c[:]) == 1
		if !ok {
			log.Warn("service account: wrong password")
		}
		return ok
	}
	if !ValidChargerID(user) || cl.ID != user {
		log.Warn("refused: username must be a charger id equal to the client id")
		return false
	}
	if pk.Connect.WillFlag && pk.Connect.WillTopic != h.b.topics.State(user) {
		log.Warn("refused: will topic is not the charger's state topic", "will_topic", pk.Connect.WillTopic)
		return false
	}
	switch outcome, err := h.b.auth.check(h.b.ctx, user, pw); outcome {
	case authOK:
		return true
	case authOKStale:
		log.Warn("admitted on the credential verified before: charger registry unavailable", "err", err)
		return true
	case authUnavailable:
		log.Error("refused: charger registry unavailable", "err", err)
		return false
	default:
		log.Warn("refused: unknown charger or wrong password", "charger", user)
		return false
	}
}

// OnACLCheck applies the ACL of docs/protocol.md §1 to topics (write) and filters (read).
func (h *brokerHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	user := string(cl.Properties.Username)
	if h.isService(user) {
		return h.b.topics.serviceMayAccess(topic, write)
	}
	if write {
		return h.b.topics.chargerMayPublish(user, topic)
	}
	return h.b.topics.chargerMayRead(user, topic)
}

// OnPublish hands a charger's message to the Handler before mochi sends
// the PUBACK. On failure the packet is rejected and the connection dropped:
// the charger's client keeps the message and re-sends it on reconnect.
//
// What chargeflow's own account publishes (commands, tools' traffic) is not
// a charger's message, except on a charger's state or up topic: there it
// relays for chargers (the scale bench's multiplexed chargers, a gateway),
// and the message is handed over as the charger's, as on an external
// broker, where the link's subscription receives it whoever published it.
func (h *brokerHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	user := string(cl.Properties.Username)
	if cl.Net.Inline {
		return pk, nil
	}
	cp, kind := h.b.topics.parseInbound(pk.TopicName)
	if h.isService(user) && (!kind.Up() || !ValidChargerID(cp)) {
		return pk, nil
	}
	in := Inbound{ChargerID: cp, Kind: kind, Topic: pk.TopicName, Payload: bytes.Clone(pk.Payload),
		ReceivedAt: h.b.now(), Retained: false, Duplicate: pk.FixedHeader.Dup}
	if err := h.b.deliver(in); err != nil {
		h.b.log.Warn("message not handed off; rejecting so the charger re-sends", "charger", cp,
			"topic", pk.TopicName, "err", err)
		cl.Stop(fmt.Errorf("hand-off failed: %w", err))
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// OnWillSent hands a charger's will (presence: offline, "lwt") to the
// Handler. There is no one to re-send a will, so a failed hand-off is
// retried here briefly; the will also stays retained on the state topic.
func (h *brokerHook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	user := string(cl.Properties.Username)
	if h.isService(user) || !ValidChargerID(user) {
		return
	}
	cp, kind := h.b.topics.parseInbound(pk.TopicName)
	in := Inbound{ChargerID: cp, Kind: kind, Topic: pk.TopicName, Payload: bytes.Clone(pk.Payload),
		ReceivedAt: h.b.now()}
	wait := 50 * time.Millisecond
	for attempt := 0; attempt < 5; attempt++ {
		err := h.b.deliver(in)
		if err == nil {
			return
		}
		if h.b.ctx.Err() != nil {
			return // our own shutdown dropped the charger: not news
		}
		h.b.log.Warn("will not handed off", "charger", cp, "attempt", attempt+1, "err", err)
		time.Sleep(wait)
		wait *= 2
	}
}

// Ready reports whether the embedded broker is serving (for /readyz).
func (b *EmbeddedBroker) Ready() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return errors.New("embedded broker closed")
	case !b.started:
		return errors.New("embedded broker not started")
	}
	return nil
}
