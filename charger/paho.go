package charger

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// PahoConfig configures the link to an external broker (Mosquitto).
type PahoConfig struct {
	URL      string // tcp://host:1883, ssl://… or mqtts://… (TLS)
	Username string // chargeflow's own broker account
	Password string
	// ClientID must be unique among running chargeflow instances (two
	// processes with one id kick each other off forever) and stable across
	// restarts of one instance (it names the persistent session that keeps
	// messages while the instance is down). cmd builds it as
	// "chargeflow-" + CHARGEFLOW_INSTANCE_ID.
	ClientID string
	Prefix   string // topic prefix, default "ev/v1"
	// ShareGroup, when set, subscribes the up topics as
	// $share/<group>/{prefix}/+/up/# so that instances split the load. The
	// state topic is always subscribed unshared: brokers send no retained
	// messages to shared subscriptions, and every instance wants presence.
	ShareGroup string
	TLSConfig  *tls.Config // for ssl:// and mqtts://; nil: system roots
	Logger     *slog.Logger
	KeepAlive  time.Duration // default 30s
	// RetryMin/RetryMax bound the back-off of handler retries (default 100ms, 5s).
	RetryMin, RetryMax time.Duration
	// MaxQueued bounds messages received but not yet handled, all chargers
	// together (default 100000); beyond it the link stops reading from the
	// broker until handlers catch up.
	MaxQueued int
	Now       func() time.Time // receive-time clock, default time.Now
}

// PahoLink is the Link over an external MQTT 3.1.1 broker.
//
// How it keeps the Handler contract with paho (docs/protocol.md §5):
// clean session false (the broker queues QoS 1 messages while we are away),
// the default publish handler is set before Connect (queued messages arrive
// before SUBSCRIBE), subscriptions are renewed in OnConnect, auto-ack is
// disabled and msg.Ack() runs only after the Handler returned nil.
//
// Ordering: paho's SetOrderMatters(false) starts one goroutine per message,
// which loses the per-charger arrival order before any queue of ours could
// restore it (router.go, matchAndDispatch). So the router stays ordered, and
// our callback never blocks or publishes: it appends to the charger's queue
// and returns, which is what avoids the ordered-handler deadlock (#473).
type PahoLink struct {
	cfg    PahoConfig
	topics Topics
	log    *slog.Logger
	now    func() time.Time

	mu     sync.Mutex // guards client, disp, closed
	client paho.Client
	disp   *dispatcher
	closed bool

	subscribed chan struct{} // closed after the first successful subscribe
	subOnce    sync.Once
}

var _ Link = (*PahoLink)(nil)

// NewPahoLink validates cfg and returns an unstarted link.
func NewPahoLink(cfg PahoConfig) (*PahoLink, error) {
	if cfg.URL == "" {
		return nil, errors.New("paho link: URL is required")
	}
	if cfg.ClientID == "" {
		return nil, errors.New("paho link: ClientID is required (unique per instance, stable across restarts)")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &PahoLink{cfg: cfg, topics: Topics{Prefix: cfg.Prefix}, now: cfg.Now,
		log:        loggerOr(cfg.Logger).With("component", "mqtt-link", "client_id", cfg.ClientID),
		subscribed: make(chan struct{})}, nil
}

// Start connects, subscribes and returns once subscribed. On error the link
// is left closed.
func (l *PahoLink) Start(ctx context.Context, h Handler) error {
	l.mu.Lock()
	if l.client != nil || l.closed {
		l.mu.Unlock()
		return errors.New("paho link: already started or closed")
	}
	l.disp = newDispatcher(h, l.log, orDefault(l.cfg.RetryMin, 100*time.Millisecond), orDefault(l.cfg.RetryMax, 5*time.Second),
		orDefault(l.cfg.MaxQueued, 100_000))
	opts := paho.NewClientOptions().
		AddBroker(l.cfg.URL).
		SetClientID(l.cfg.ClientID).
		SetUsername(l.cfg.Username).
		SetPassword(l.cfg.Password).
		SetCleanSession(false).
		SetOrderMatters(true). // see the type's doc: our callback only enqueues
		SetAutoAckDisabled(true).
		SetDefaultPublishHandler(l.onMessage). // before Connect: queued messages come first
		SetOnConnectHandler(l.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) { l.log.Warn("broker connection lost", "err", err) }).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(10 * time.Second).
		SetKeepAlive(orDefault(l.cfg.KeepAlive, 30*time.Second)).
		SetConnectTimeout(10 * time.Second).
		SetStore(NewPahoStore()) // commands queued during a reconnect go out in order (pahostore.go)
	if l.cfg.TLSConfig != nil {
		opts.SetTLSConfig(l.cfg.TLSConfig)
	}
	l.client = paho.NewClient(opts)
	client := l.client
	l.mu.Unlock()

	if err := wait(ctx, client.Connect()); err != nil {
		_ = l.Close()
		return fmt.Errorf("paho link: connect %s: %w", l.cfg.URL, err)
	}
	select {
	case <-l.subscribed:
		l.log.Info("mqtt link ready", "url", l.cfg.URL, "share_group", l.cfg.ShareGroup)
		return nil
	case <-ctx.Done():
		_ = l.Close()
		return fmt.Errorf("paho link: subscribe: %w", ctx.Err())
	}
}

// onConnect runs (on its own goroutine) after every connect and reconnect.
func (l *PahoLink) onConnect(c paho.Client) {
	filters := map[string]byte{l.topics.StateFilter(): 1, l.upFilter(): 1}
	tok := c.SubscribeMultiple(filters, nil) // nil: the default handler routes
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		l.log.Error("subscribe failed", "err", tok.Error())
		return
	}
	for f, code := range tok.(*paho.SubscribeToken).Result() {
		if code > 2 {
			l.log.Error("subscribe refused by broker", "filter", f, "code", code)
			return
		}
	}
	l.subOnce.Do(func() { close(l.subscribed) })
}

// upFilter is the subscription of the chargers' up topics, in the share
// group when there is one.
func (l *PahoLink) upFilter() string {
	if l.cfg.ShareGroup != "" {
		return "$share/" + l.cfg.ShareGroup + "/" + l.topics.UpFilter()
	}
	return l.topics.UpFilter()
}

// onMessage runs on paho's router goroutine, in arrival order. It must not
// block: it only enqueues.
func (l *PahoLink) onMessage(_ paho.Client, m paho.Message) {
	cp, kind := l.topics.parseInbound(m.Topic())
	l.mu.Lock()
	d := l.disp
	l.mu.Unlock()
	d.enqueue(Inbound{ChargerID: cp, Kind: kind, Topic: m.Topic(), Payload: m.Payload(),
		ReceivedAt: l.now(), Retained: m.Retained(), Duplicate: m.Duplicate()}, m.Ack)
}

// SendCommand publishes c to the charger (QoS 1, not retained) and waits
// for the broker's PUBACK or ctx.
func (l *PahoLink) SendCommand(ctx context.Context, chargerID string, c Command) error {
	payload, err := Encode(c)
	if err != nil {
		return fmt.Errorf("send command: %w", err)
	}
	return l.publish(ctx, chargerID, l.topics.Cmd(chargerID), payload)
}

// AckTxn publishes down/txnack for eventID (QoS 1) and waits for the PUBACK.
func (l *PahoLink) AckTxn(ctx context.Context, chargerID, eventID string) error {
	payload, err := Encode(TxnAck{EventID: eventID})
	if err != nil {
		return fmt.Errorf("ack txn: %w", err)
	}
	return l.publish(ctx, chargerID, l.topics.TxnAck(chargerID), payload)
}

func (l *PahoLink) publish(ctx context.Context, cp, topic string, payload []byte) error {
	if !ValidChargerID(cp) {
		return fmt.Errorf("publish %s: invalid charger id %q", topic, cp)
	}
	l.mu.Lock()
	client, closed := l.client, l.closed
	l.mu.Unlock()
	if client == nil || closed {
		return fmt.Errorf("publish %s: link not running", topic)
	}
	if err := wait(ctx, client.Publish(topic, 1, false, payload)); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

// Close stops the handlers (waiting for calls in progress; ctx given to
// them is cancelled), then disconnects. Unhandled messages stay with the
// broker's session for the next start with this ClientID. Idempotent.
//
// In a share group it first leaves the group (unsubscribes): Mosquitto goes
// on giving a disconnected persistent member its share of the group's
// messages, and an instance that never comes back under this ClientID (a
// replaced Kubernetes pod) would take them with it. The other members get
// them instead; a restart under the same ClientID subscribes again.
func (l *PahoLink) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	client, d := l.client, l.disp
	l.mu.Unlock()
	if client != nil && l.cfg.ShareGroup != "" && client.IsConnectionOpen() {
		if tok := client.Unsubscribe(l.upFilter(), l.topics.StateFilter()); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			l.log.Warn("leave the share group", "err", tok.Error())
		}
	}
	if d != nil {
		d.stop()
	}
	if client != nil {
		client.Disconnect(250)
	}
	return nil
}

// wait waits for a paho token or ctx.
func wait(ctx context.Context, t paho.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ready reports whether the link is connected to the broker (for
// /readyz); nil once connected, an error saying why not otherwise.
func (l *PahoLink) Ready() error {
	l.mu.Lock()
	c, closed := l.client, l.closed
	l.mu.Unlock()
	switch {
	case closed:
		return errors.New("mqtt link closed")
	case c == nil:
		return errors.New("mqtt link not started")
	case !c.IsConnectionOpen():
		return errors.New("mqtt broker not connected")
	}
	return nil
}
