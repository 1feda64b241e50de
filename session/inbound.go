package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/store"
)

// heardEvery bounds how often a charger's last-heard time is written.
const heardEvery = 15 * time.Second

// HandleCharger takes one message from a charger (a charger.Handler). It
// returns nil once the message is durably handled — applied, stored as an
// anomaly, or recognised as a duplicate — so the link may acknowledge it; an
// error means "not stored, send it again". A malformed payload is stored as
// an anomaly with its reason and acknowledged: it will not get better.
func (e *Engine) HandleCharger(ctx context.Context, in charger.Inbound) error {
	if in.ReceivedAt.IsZero() {
		in.ReceivedAt = e.now()
	}
	bad := func(reason string) error {
		e.anomaly(ctx, store.Anomaly{At: in.ReceivedAt, ChargerID: in.ChargerID, Topic: in.Topic, Payload: in.Payload, Reason: reason})
		return nil
	}
	if !charger.ValidChargerID(in.ChargerID) {
		return bad("message on an unknown topic")
	}
	msg, err := charger.Decode(in.Kind, in.Payload)
	if err != nil {
		var inv *charger.InvalidError
		if errors.As(err, &inv) {
			return bad(inv.Reason)
		}
		return bad(err.Error())
	}
	c, err := e.store.GetCharger(ctx, in.ChargerID)
	if errors.Is(err, store.ErrNotFound) {
		return bad("message from an unregistered charger")
	}
	if err != nil {
		return err
	}
	e.heardFrom(ctx, c, in.ReceivedAt)

	switch m := msg.(type) {
	case charger.StateMsg:
		return e.chargerState(ctx, c, m, in)
	case charger.StatusMsg:
		_, err := e.updateCharger(ctx, c.ID, func(c *store.Charger) {
			if c.ConnectorStatus == nil {
				c.ConnectorStatus = map[int]string{}
			}
			c.ConnectorStatus[m.Connector] = m.Status
		})
		return err
	case charger.MeterMsg:
		return e.chargerEvent(ctx, c, in, m.SessionID, fsm.Event{Type: fsm.EvMeter, ChargerTime: m.TS, MeterWh: m.EnergyWh, Seq: m.Seq})
	case charger.TxnMsg:
		return e.txn(ctx, c, in, m)
	case charger.AckMsg:
		// The session records the answer: an unanswered command is sent
		// again (docs/protocol.md).
		id, stop, ok := fsm.CommandSession(m.CmdID)
		if !ok {
			return nil // not a command of ours: nothing to record
		}
		ev := fsm.Event{Type: fsm.EvStartAccepted, CmdID: m.CmdID, Reason: m.Reason}
		switch {
		case stop && m.Result == charger.ResultRejected:
			ev.Type = fsm.EvStopRejected
		case stop:
			ev.Type = fsm.EvStopAccepted
		case m.Result == charger.ResultRejected:
			ev.Type = fsm.EvStartRejected
		}
		return e.chargerEvent(ctx, c, in, id, ev)
	}
	return bad(fmt.Sprintf("unexpected %s message", in.Kind))
}

// txn applies a started/ended event, then acknowledges it to the charger —
// duplicates included (the charger re-sends until acknowledged).
func (e *Engine) txn(ctx context.Context, c store.Charger, in charger.Inbound, m charger.TxnMsg) error {
	typ := fsm.EvStarted
	if m.Type == charger.TxnEnded {
		typ = fsm.EvEnded
	}
	if err := e.chargerEvent(ctx, c, in, m.SessionID, fsm.Event{Type: typ, ChargerTime: m.TS, MeterWh: m.MeterWh, Reason: m.Reason, Offline: m.Offline}); err != nil {
		return err
	}
	// Applying is idempotent (the machine ignores what already took
	// effect); the record only tells duplicates apart in the logs.
	first, err := e.store.MarkProcessed(ctx, "txn", c.ID+"/"+m.EventID, e.cfg.TxnDedupTTL)
	if err != nil {
		return err
	}
	if !first {
		e.log.Debug("duplicate txn event", "charger", c.ID, "event_id", m.EventID, "session", m.SessionID)
	}
	select {
	case e.acks <- txnAck{c.ID, m.EventID}:
	default: // stored already; the charger re-sends and gets the ack then
	}
	return nil
}

// chargerEvent applies a charger's event to the session it names, after
// checking the session belongs to that charger and connector.
func (e *Engine) chargerEvent(ctx context.Context, c store.Charger, in charger.Inbound, sessionID string, ev fsm.Event) error {
	ev.At, ev.By = in.ReceivedAt, fsm.ByCharger
	var foreign *Error
	check := func(s fsm.Session) error {
		if s.ChargerID != c.ID {
			foreign = Errorf(CodeForbidden, "%s from %s for a session of %s", ev.Type, c.ID, s.ChargerID)
			return foreign
		}
		return nil
	}
	_, err := e.apply(ctx, sessionID, ev, source{topic: in.Topic, payload: in.Payload, check: check})
	bad := func(reason string) error {
		e.anomaly(ctx, store.Anomaly{At: in.ReceivedAt, ChargerID: c.ID, SessionID: sessionID, Topic: in.Topic, Payload: in.Payload, Reason: reason})
		return nil // stored: acknowledge it
	}
	var refused *fsm.RefusedError
	switch {
	case errors.Is(err, store.ErrNotFound):
		return bad(fmt.Sprintf("%s for unknown session %q", ev.Type, sessionID))
	case foreign != nil && errors.Is(err, foreign):
		return bad(foreign.Message)
	case errors.As(err, &refused):
		return bad(refused.Error())
	}
	return err
}

// chargerState records presence from the retained state topic and the will,
// and tells the charger's active sessions.
func (e *Engine) chargerState(ctx context.Context, c store.Charger, m charger.StateMsg, in charger.Inbound) error {
	wasOnline := c.Online
	updated, err := e.updateCharger(ctx, c.ID, func(c *store.Charger) {
		c.Online = m.Online
		if m.Online {
			c.BootID, c.Model, c.FW = m.BootID, m.Model, m.FW
			if len(m.Connectors) > 0 {
				c.ConnectorStatus = map[int]string{}
				for _, cs := range m.Connectors {
					c.ConnectorStatus[cs.ID] = cs.Status
				}
			}
		}
	})
	if err != nil {
		return err
	}
	if wasOnline != m.Online {
		e.log.Info("charger presence", "charger", c.ID, "online", m.Online, "reason", m.Reason, "boot_id", m.BootID)
	}
	typ, reason := fsm.EvChargerOnline, m.Reason
	if !m.Online {
		typ = fsm.EvChargerOffline
	} else if c.BootID != "" && m.BootID != "" && m.BootID != c.BootID {
		reason = fsm.ReasonReboot // it may have lost what it was doing
	}
	for _, conn := range updated.Connectors {
		s, err := e.store.ActiveSession(ctx, c.ID, conn)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if _, err := e.Apply(ctx, s.ID, fsm.Event{Type: typ, At: in.ReceivedAt, By: fsm.ByCharger, Reason: reason}); ignoreRefused(err) != nil {
			return err
		}
	}
	return nil
}

// updateCharger changes a charger and publishes the change to the feed.
func (e *Engine) updateCharger(ctx context.Context, id string, fn func(*store.Charger)) (store.Charger, error) {
	return e.store.UpdateCharger(ctx, id, func(c *store.Charger) ([]byte, error) {
		fn(c)
		c.UpdatedAt = e.now()
		return json.Marshal(NewChargerView(*c))
	})
}

// heardFrom writes the charger's last-heard time, at most every heardEvery.
func (e *Engine) heardFrom(ctx context.Context, c store.Charger, at time.Time) {
	e.heardMu.Lock()
	last := e.heard[c.ID]
	due := at.Sub(last) >= heardEvery
	if due {
		e.heard[c.ID] = at
	}
	e.heardMu.Unlock()
	if !due {
		return
	}
	if _, err := e.store.UpdateCharger(ctx, c.ID, func(c *store.Charger) ([]byte, error) {
		if at.After(c.LastHeardAt) {
			c.LastHeardAt = at
		}
		return nil, nil
	}); err != nil {
		e.log.Warn("last heard", "charger", c.ID, "err", err)
	}
}

// HandleNotification applies a verified Huifu notification (the apply of
// payscore.NotifyHandler). A notification is a hint (docs/payscore.md §5): its own
// verified fields move the session when they are complete, otherwise the
// order is queried. Applying the same notification twice changes nothing.
// An error means "not applied": Huifu will send it again.
func (e *Engine) HandleNotification(ctx context.Context, n payscore.Notification) error {
	s, err := e.notifiedSession(ctx, n)
	if errors.Is(err, store.ErrNotFound) {
		// Acknowledged all the same: refused, Huifu would only send it again.
		reason := fmt.Sprintf("notification for unknown order %q", n.OutOrderNo)
		if n.OutOrderNo == "" {
			reason = fmt.Sprintf("notification without out_order_no (req_seq_id %q)", n.ReqSeqID)
		}
		e.anomaly(ctx, store.Anomaly{Payload: []byte(n.Raw), Reason: reason})
		return nil
	}
	if err != nil {
		return err
	}
	now := e.now()
	var ev fsm.Event
	switch n.Kind {
	case payscore.KindUserConfirmed:
		ev = fsm.Event{Type: fsm.EvConfirm, At: now, By: fsm.ByPayScore, Reason: "notification"}
	case payscore.KindPaymentSucceeded:
		// The machine decides whether the user paid it themselves, from
		// the record it applies to.
		ev = fsm.Event{Type: fsm.EvPaid, At: now, By: fsm.ByPayScore, AmountFen: n.TransAmt, HfSeqID: n.TransHfSeqID, ReqDate: n.TransReqDate}
		if n.TransHfSeqID == "" || n.TransReqDate == "" || len(n.Unreadable) > 0 {
			// Not complete enough to refund from later: let the facts decide.
			return e.reconcile(ctx, s.ID)
		}
	default:
		e.anomaly(ctx, store.Anomaly{SessionID: s.ID, ChargerID: s.ChargerID, Payload: []byte(n.Raw), Reason: "notification of unknown kind"})
		return e.reconcile(ctx, s.ID)
	}
	_, err = e.apply(ctx, s.ID, ev, source{loaded: &s}) // no second read of the record just read
	return ignoreRefused(err)
}

// notifiedSession finds a notification's session: the one our req_seq_id
// names (payscore.SessionOf) when it is the order's session — one read, where
// the lookup by out_order_no takes two — else by out_order_no. Without an
// out_order_no, only the req_seq_id's session. store.ErrNotFound when
// neither finds one.
func (e *Engine) notifiedSession(ctx context.Context, n payscore.Notification) (fsm.Session, error) {
	if id := payscore.SessionOf(n.ReqSeqID); id != "" {
		s, err := e.store.GetSession(ctx, id)
		switch {
		case n.OutOrderNo == "":
			return s, err
		case err == nil && s.OutOrderNo == n.OutOrderNo:
			return s, nil
		}
	}
	if n.OutOrderNo != "" {
		return e.store.SessionByOutOrderNo(ctx, n.OutOrderNo)
	}
	return fsm.Session{}, store.ErrNotFound
}

// ResetPresence marks every charger offline and tells their active
// sessions (which starts the offline grace). The embedded broker calls it
// before it listens: nobody is connected to a broker that has just started,
// and a charger's presence is only known again when it reconnects and
// publishes its state.
//
// The chargers are marked resetPresenceWidth at a time: each is its own
// store write, and on the embedded store concurrent writes share one
// transaction and one fsync (group commit), so a fleet of thousands is
// reset in a fraction of the time one-by-one writes take, and the broker
// listens sooner after a restart (docs/bench.md "scale").
func (e *Engine) ResetPresence(ctx context.Context) error {
	chargers, err := e.store.ListChargers(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, resetPresenceWidth)
	var wg sync.WaitGroup
	for _, c := range chargers {
		if !c.Online {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			in := charger.Inbound{ChargerID: c.ID, Kind: charger.KindState, ReceivedAt: e.now()}
			if err := e.chargerState(ctx, c, charger.StateMsg{Online: false, Reason: "broker_restart"}, in); err != nil {
				cancel(fmt.Errorf("charger %s: %w", c.ID, err))
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

// resetPresenceWidth is how many chargers ResetPresence marks at once.
const resetPresenceWidth = 64

// Credentials gives the embedded broker each charger's password hash from
// the charger registry in st.
func Credentials(st store.Store) charger.Credentials { return registry{st} }

type registry struct{ st store.Store }

func (r registry) ChargerPasswordHash(ctx context.Context, id string) (string, bool, error) {
	c, err := r.st.GetCharger(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return c.PasswordHash, c.PasswordHash != "", nil
}
