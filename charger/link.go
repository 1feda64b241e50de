package charger

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Inbound is one message from a charger, as received from the broker.
// Payload is raw: decoding (and storing a malformed payload as an anomaly
// with its bytes) is the handler's business; see Decode.
type Inbound struct {
	ChargerID  string    // the topic's charger level; valid per ValidChargerID unless Kind is ""
	Kind       Kind      // KindState, KindStatus, …; an unknown up kind is passed through as is, "" if the topic is not parseable
	Topic      string    // the full topic as published
	Payload    []byte    // owned by the handler
	ReceivedAt time.Time // when the link received it (the cloud's receive time)
	Retained   bool      // a retained state delivered on subscribe, not a fresh publish
	Duplicate  bool      // MQTT DUP flag: a re-send; only a hint, de-duplicate on ids
}

// Handler durably hands off one message (the engine stores it).
//
// Contract, the same for every Link:
//   - it is called serially per charger, in the order the broker delivered
//     that charger's messages; different chargers run concurrently;
//   - the broker is acknowledged (PUBACK) only after it returned nil, so a
//     nil return must mean "stored": after a crash the message is not
//     delivered again;
//   - an error means "not stored": the message will come again (the paho
//     link retries the handler with back-off until it succeeds or the link
//     closes; the embedded broker rejects the publish and drops the charger's
//     connection so that it re-sends it);
//   - it must be quick and must not wait on SendCommand/AckTxn of the same
//     link (send acks after it returns, e.g. from an outbox); ctx is done
//     when the link closes.
//
// Messages may be delivered more than once (QoS 1); the de-duplication
// keys of docs/protocol.md §4 apply.
type Handler func(ctx context.Context, m Inbound) error

// Link is chargeflow's connection to its chargers: it receives their
// messages and sends them commands. Both implementations (PahoLink for an
// external broker, EmbeddedBroker) satisfy it. Start once, Close once (more
// Close calls are no-ops); SendCommand and AckTxn are safe for concurrent
// use after Start returned.
type Link interface {
	// Start connects (or starts listening), subscribes, and returns once
	// messages flow to h. It fails if that is not possible before ctx is done.
	Start(ctx context.Context, h Handler) error
	// SendCommand publishes c on the charger's down/cmd topic, QoS 1, never
	// retained, and returns once the broker has taken it. An error does not
	// prove the command was not delivered: commands are idempotent by cmd_id.
	SendCommand(ctx context.Context, chargerID string, c Command) error
	// AckTxn publishes down/txnack for eventID (QoS 1), after the event is stored.
	AckTxn(ctx context.Context, chargerID, eventID string) error
	// Close stops delivering, waits for running handlers, and disconnects.
	// Messages not yet handed off stay unacknowledged with the broker.
	Close() error
}

// parseInbound splits an up topic leniently: the engine must see (and keep
// as an anomaly) even messages on topics docs/protocol.md does not define, as long
// as the broker's ACL let them through.
func (t Topics) parseInbound(topic string) (cp string, k Kind) {
	if cp, k, ok := t.Parse(topic); ok {
		return cp, k
	}
	rest, ok := strings.CutPrefix(topic, t.prefix()+"/")
	if !ok {
		return "", ""
	}
	cp, rest, _ = strings.Cut(rest, "/")
	if !ValidChargerID(cp) {
		return cp, ""
	}
	if kind, ok := strings.CutPrefix(rest, "up/"); ok && kind != "" && !strings.Contains(kind, "/") {
		return cp, Kind(kind)
	}
	return cp, ""
}

// dispatcher runs a Handler serially per charger without ever blocking the
// caller of enqueue (the paho router goroutine): each charger with pending
// messages has one worker goroutine, which exits when its queue is empty.
// Queues are bounded in total (maxQueued): beyond it enqueue waits, which
// back-pressures the broker connection. We cannot lean on the broker's
// inflight window for the bound: Mosquitto 2.0 reorders a client's QoS 1
// messages once that window is full (see deploy/mosquitto/mosquitto.conf).
type dispatcher struct {
	h        Handler
	log      *slog.Logger
	ctx      context.Context // done on stop: workers stop retrying
	cancel   context.CancelFunc
	minRetry time.Duration
	maxRetry time.Duration

	maxQueued int

	mu     sync.Mutex // guards queues, queued, closed
	space  *sync.Cond // signalled when queued drops or closed is set
	queues map[string][]pending
	queued int
	closed bool
	wg     sync.WaitGroup
}

type pending struct {
	in  Inbound
	ack func() // sends the PUBACK; called only after h returned nil
}

func newDispatcher(h Handler, log *slog.Logger, minRetry, maxRetry time.Duration, maxQueued int) *dispatcher {
	ctx, cancel := context.WithCancel(context.Background())
	d := &dispatcher{h: h, log: log, ctx: ctx, cancel: cancel, minRetry: minRetry, maxRetry: maxRetry,
		maxQueued: maxQueued, queues: map[string][]pending{}}
	d.space = sync.NewCond(&d.mu)
	return d
}

// enqueue appends m to its charger's queue; it waits only while maxQueued
// messages are pending. After stop it drops m unacknowledged (the broker
// keeps it for the next session).
func (d *dispatcher) enqueue(in Inbound, ack func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.queued >= d.maxQueued && !d.closed {
		d.space.Wait()
	}
	if d.closed {
		return
	}
	d.queued++
	q, running := d.queues[in.ChargerID]
	d.queues[in.ChargerID] = append(q, pending{in, ack})
	if !running {
		d.wg.Add(1)
		go d.work(in.ChargerID)
	}
}

func (d *dispatcher) work(cp string) {
	defer d.wg.Done()
	for {
		d.mu.Lock()
		q := d.queues[cp]
		if len(q) == 0 || d.closed {
			delete(d.queues, cp)
			d.mu.Unlock()
			return
		}
		p := q[0]
		q[0] = pending{}
		d.queues[cp] = q[1:]
		d.queued--
		d.space.Signal()
		d.mu.Unlock()
		if !d.handle(p) {
			return // stopping; the rest stays unacknowledged
		}
	}
}

// handle runs the handler until it succeeds (then acks) or the dispatcher
// stops (then does not ack). paho 3.1.1 would not redeliver an unacked
// message before a reconnect, so retrying here is the only way to make
// progress without losing the message or reordering the charger's queue.
func (d *dispatcher) handle(p pending) bool {
	wait := d.minRetry
	for attempt := 1; ; attempt++ {
		err := d.h(d.ctx, p.in)
		if err == nil {
			p.ack()
			return true
		}
		d.log.Warn("handler failed, retrying", "charger", p.in.ChargerID, "topic", p.in.Topic,
			"attempt", attempt, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-d.ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		wait = min(wait*2, d.maxRetry)
	}
}

// stop makes workers finish their current handler call and exit, and waits.
func (d *dispatcher) stop() {
	d.mu.Lock()
	d.closed = true
	d.space.Broadcast()
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func loggerOr(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
