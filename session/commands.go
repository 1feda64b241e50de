package session

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/store"
	"github.com/oklog/ulid/v2"
)

// NewID returns a new session id: a ULID (48-bit milliseconds, then 80
// random bits) in lower case, 26 characters, time ordered. Alphanumeric, so
// it can be embedded in Huifu's req_seq_id as is.
func NewID(now time.Time) string {
	return strings.ToLower(ulid.MustNew(ulid.Timestamp(now), rand.Reader).String())
}

// CreateRequest is what the app asks for (POST /v1/sessions).
type CreateRequest struct {
	ChargerID    string    `json:"charger_id"`
	Connector    int       `json:"connector"`
	OpenID       string    `json:"openid"`
	MaxAmountFen money.Fen `json:"max_amount_fen"`
}

// Validate returns field-level messages, or nil.
func (r CreateRequest) Validate(maxAmount money.Fen) map[string]string {
	f := map[string]string{}
	switch {
	case r.ChargerID == "":
		f["charger_id"] = "required"
	case !charger.ValidChargerID(r.ChargerID):
		f["charger_id"] = "must be 1–64 letters, digits, '_' or '-'"
	}
	if r.Connector <= 0 {
		f["connector"] = "must be a positive connector number"
	}
	switch {
	case r.OpenID == "":
		f["openid"] = "required: the user's WeChat openid (without it every debit fails)"
	case len(r.OpenID) > 128 || !utf8.ValidString(r.OpenID):
		f["openid"] = "too long or not UTF-8"
	}
	switch {
	case r.MaxAmountFen <= 0:
		f["max_amount_fen"] = "must be a positive amount in fen"
	case r.MaxAmountFen > maxAmount:
		f["max_amount_fen"] = fmt.Sprintf("must not exceed %d fen", maxAmount)
	}
	if len(f) == 0 {
		return nil
	}
	return f
}

// Create opens session id for req: it checks the charger and connector,
// creates the Pay Score service order (the risk fund is the spending cap),
// and stores the session in `created`. Calling it again with the same id
// (an Idempotency-Key replay after a crash) returns the stored session, or
// finishes the creation with the same req_seq_id.
func (e *Engine) Create(ctx context.Context, id string, req CreateRequest) (fsm.Session, error) {
	if fields := req.Validate(money.Fen(e.cfg.MaxAmountFen)); fields != nil {
		return fsm.Session{}, Invalid(fields)
	}
	if s, err := e.store.GetSession(ctx, id); err == nil {
		return s, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return fsm.Session{}, err
	}
	c, err := e.store.GetCharger(ctx, req.ChargerID)
	if errors.Is(err, store.ErrNotFound) {
		return fsm.Session{}, Errorf(CodeNotFound, "charger %s is not registered", req.ChargerID)
	}
	if err != nil {
		return fsm.Session{}, err
	}
	if !slices.Contains(c.Connectors, req.Connector) {
		return fsm.Session{}, Errorf(CodeNotFound, "charger %s has no connector %d", req.ChargerID, req.Connector)
	}
	if !c.Online {
		return fsm.Session{}, Errorf(CodeConflict, "charger %s is offline", req.ChargerID)
	}
	switch c.ConnectorStatus[req.Connector] {
	case charger.StatusFaulted, charger.StatusUnavailable:
		return fsm.Session{}, Errorf(CodeConflict, "connector %d of %s is %s", req.Connector, req.ChargerID, c.ConnectorStatus[req.Connector])
	}
	if busy, err := e.store.ActiveSession(ctx, req.ChargerID, req.Connector); err == nil {
		return fsm.Session{}, Errorf(CodeConflict, "connector %d of %s is busy with session %s", req.Connector, req.ChargerID, busy.ID)
	} else if !errors.Is(err, store.ErrNotFound) {
		return fsm.Session{}, err
	}
	tariff, err := e.store.GetTariff(ctx, c.TariffID)
	if errors.Is(err, store.ErrNotFound) {
		return fsm.Session{}, Errorf(CodeConflict, "charger %s has no usable tariff (%q)", req.ChargerID, c.TariffID)
	}
	if err != nil {
		return fsm.Session{}, err
	}

	now := e.now()
	reqSeq := payscore.AttemptOn(id, payscore.StepCreate, 1, now).ReqSeqID
	order, err := e.pay.CreateOrder(ctx, payscore.CreateOrderRequest{
		ReqSeqID: reqSeq, ReqDate: now, ServiceIntroduction: e.cfg.ServiceIntroduction,
		RiskFund:  payscore.RiskFund{Name: payscore.RiskFundEstimate, Amount: req.MaxAmountFen, Description: "充电费用上限"},
		TimeRange: payscore.TimeRange{StartOnAccept: true}, OpenID: req.OpenID,
	})
	if payscore.IsDuplicate(err) {
		// An earlier attempt with this id got through: find its order.
		o, qerr := e.pay.QueryOrder(ctx, payscore.OrderLocator{ReqSeqID: reqSeq})
		if qerr != nil {
			return fsm.Session{}, Errorf(CodeUnavailable, "the payment order is being created, try again")
		}
		order, err = &payscore.CreateOrderResponse{OutOrderNo: o.OutOrderNo, State: o.State}, nil
	}
	if err != nil {
		if Classify(err) != ClassFinal {
			e.log.Warn("create order uncertain", "session", id, "charger", req.ChargerID, "err", err)
			return fsm.Session{}, Errorf(CodeUnavailable, "the payment service did not answer, try again with the same Idempotency-Key")
		}
		e.log.Warn("create order refused", "session", id, "charger", req.ChargerID, "err", err)
		return fsm.Session{}, Errorf(CodePaymentRefused, "Pay Score refused the order: %s", payscoreReason(err))
	}
	if order.OutOrderNo == "" {
		return fsm.Session{}, Errorf(CodePaymentRefused, "Pay Score returned no order number")
	}
	r, err := e.machine.NewSession(fsm.Event{Type: fsm.EvCreate, At: now, By: fsm.ByApp, Create: &fsm.CreateParams{
		ID: id, ChargerID: req.ChargerID, Connector: req.Connector, OpenID: req.OpenID, MaxAmountFen: req.MaxAmountFen,
		Tariff: tariff, OutOrderNo: order.OutOrderNo, Package: order.Package, CreateReqDate: payscore.FormatDate(now),
	}})
	if err != nil {
		return fsm.Session{}, err
	}
	data, err := json.Marshal(NewView(withVersion(r.Session, 1), r.History))
	if err != nil {
		return fsm.Session{}, err
	}
	err = e.store.CreateSession(ctx, store.Commit{Session: r.Session, History: r.History, Effects: r.Effects, Publish: true, ChangeData: data,
		Webhooks: e.webhookEvents(id, 1, fsm.Event{Type: fsm.EvCreate, At: now}, r, data)})
	if errors.Is(err, store.ErrConnectorBusy) {
		// Lost a race for the connector: the order must not stay open.
		if cerr := e.pay.CancelOrder(ctx, payscore.CancelOrderRequest{Order: payscore.OrderLocator{OutOrderNo: order.OutOrderNo}, Reason: "connector busy"}); cerr != nil {
			e.anomaly(ctx, store.Anomaly{SessionID: id, ChargerID: req.ChargerID, Reason: "cancel order of a session that lost its connector: " + cerr.Error()})
		}
		return fsm.Session{}, Errorf(CodeConflict, "connector %d of %s is busy", req.Connector, req.ChargerID)
	}
	if errors.Is(err, store.ErrExists) {
		return e.store.GetSession(ctx, id)
	}
	if err != nil {
		return fsm.Session{}, fmt.Errorf("store new session: %w", err)
	}
	e.histories.put(id, 1, r.History) // historycache.go
	e.log.Info("session created", "session", id, "charger", req.ChargerID, "connector", req.Connector, "out_order_no", order.OutOrderNo)
	if e.obs != nil {
		e.obs.Transition("", fsm.Created, fsm.EvCreate)
	}
	e.wake()
	return withVersion(r.Session, 1), nil
}

func withVersion(s fsm.Session, v int64) fsm.Session { s.Version = v; return s }

func payscoreReason(err error) string {
	var pe *payscore.Error
	if errors.As(err, &pe) && pe.Desc != "" {
		return pe.Desc
	}
	return "refused"
}

// Get returns a session and its history.
func (e *Engine) Get(ctx context.Context, id string) (fsm.Session, []fsm.HistoryEntry, error) {
	s, err := e.store.GetSession(ctx, id)
	if err != nil {
		return fsm.Session{}, nil, err
	}
	h, err := e.store.History(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fsm.Session{}, nil, err
	}
	return s, h, nil
}

// act applies an API or operator event now.
func (e *Engine) act(ctx context.Context, id string, ev fsm.Event) (fsm.Session, error) {
	ev.At = e.now()
	r, err := e.Apply(ctx, id, ev)
	if err != nil {
		return fsm.Session{}, err
	}
	return r.Session, nil
}

// Stop asks the charger to stop (the user, or an operator).
func (e *Engine) Stop(ctx context.Context, id string, by fsm.Source) (fsm.Session, error) {
	return e.act(ctx, id, fsm.Event{Type: fsm.EvStop, By: by})
}

// Cancel cancels a session before charging.
func (e *Engine) Cancel(ctx context.Context, id string, by fsm.Source) (fsm.Session, error) {
	return e.act(ctx, id, fsm.Event{Type: fsm.EvCancel, By: by})
}

// Close ends a stuck session by hand (an operator, with a reason).
func (e *Engine) Close(ctx context.Context, id, operator, reason string) (fsm.Session, error) {
	if strings.TrimSpace(reason) == "" {
		return fsm.Session{}, Invalid(map[string]string{"reason": "required: say why the session is closed"})
	}
	return e.act(ctx, id, fsm.Event{Type: fsm.EvClose, By: fsm.Operator(operator), Reason: reason})
}

// DeductNow tries the debit now (an operator).
func (e *Engine) DeductNow(ctx context.Context, id, operator string) (fsm.Session, error) {
	return e.act(ctx, id, fsm.Event{Type: fsm.EvDeductNow, By: fsm.Operator(operator)})
}

// Refund refunds amount of a paid session (an operator) and returns the
// session with the refund it asked for. The machine gives the refund its id
// and number from the record it applies to, so concurrent refunds are each
// carried out or refused (a *fsm.RefusedError: not paid, or more than is
// left to refund). A non-empty key (the request's Idempotency-Key) makes a
// repeated request a no-op that returns the refund first asked for with it.
func (e *Engine) Refund(ctx context.Context, id, operator string, amount money.Fen, reason, key string) (fsm.Session, fsm.Refund, error) {
	f := map[string]string{}
	if amount <= 0 {
		f["amount_fen"] = "must be a positive amount in fen"
	}
	if strings.TrimSpace(reason) == "" {
		f["reason"] = "required"
	}
	if len(f) > 0 {
		return fsm.Session{}, fsm.Refund{}, Invalid(f)
	}
	ev := fsm.Event{Type: fsm.EvRefund, At: e.now(), By: fsm.Operator(operator), AmountFen: amount, Reason: reason, Key: key}
	r, err := e.Apply(ctx, id, ev)
	if err != nil {
		return fsm.Session{}, fsm.Refund{}, err
	}
	s := r.Session
	if rf, ok := s.RefundByKey(key); ok {
		return s, rf, nil
	}
	if r.Changed && len(s.Refunds) > 0 {
		rf, _ := s.RefundByID(s.Refunds[len(s.Refunds)-1].ID)
		return s, rf, nil
	}
	return fsm.Session{}, fsm.Refund{}, fmt.Errorf("refund of %s: the machine neither asked for a refund nor refused (%s)", id, r.Ignored)
}

// ChargerRequest registers or updates a charger (PUT /v1/chargers/{id}).
type ChargerRequest struct {
	Connectors []int  `json:"connectors"`
	TariffID   string `json:"tariff_id"`
	Password   string `json:"password,omitempty"`
}

// PutCharger registers or updates a charger. The password, when given, is
// stored hashed (the embedded broker checks it); presence is kept.
func (e *Engine) PutCharger(ctx context.Context, id string, req ChargerRequest) (store.Charger, error) {
	f := map[string]string{}
	if !charger.ValidChargerID(id) {
		f["id"] = "must be 1–64 letters, digits, '_' or '-'"
	}
	if len(req.Connectors) == 0 || len(req.Connectors) > 32 {
		f["connectors"] = "1 to 32 connector numbers"
	}
	seen := map[int]bool{}
	for _, c := range req.Connectors {
		if c <= 0 || seen[c] {
			f["connectors"] = "connector numbers must be positive and distinct"
		}
		seen[c] = true
	}
	if req.TariffID == "" {
		req.TariffID = "default"
	}
	if req.Password != "" && len(req.Password) < 8 {
		f["password"] = "at least 8 characters"
	}
	if len(f) > 0 {
		return store.Charger{}, Invalid(f)
	}
	if _, err := e.store.GetTariff(ctx, req.TariffID); errors.Is(err, store.ErrNotFound) {
		return store.Charger{}, Invalid(map[string]string{"tariff_id": fmt.Sprintf("no tariff %q", req.TariffID)})
	} else if err != nil {
		return store.Charger{}, err
	}
	var hash string
	if req.Password != "" {
		h, err := charger.HashPassword(req.Password)
		if err != nil {
			return store.Charger{}, err
		}
		hash = h
	}
	conns := slices.Clone(req.Connectors)
	slices.Sort(conns)
	c, err := e.store.UpdateCharger(ctx, id, func(c *store.Charger) ([]byte, error) {
		c.ID, c.Connectors, c.TariffID = id, conns, req.TariffID
		if hash != "" {
			c.PasswordHash = hash
		}
		c.UpdatedAt = e.now()
		return json.Marshal(NewChargerView(*c))
	})
	if errors.Is(err, store.ErrNotFound) {
		c = store.Charger{ID: id, Connectors: conns, TariffID: req.TariffID, PasswordHash: hash, UpdatedAt: e.now()}
		err = e.store.PutCharger(ctx, c)
	}
	return c, err
}

// PutTariff stores a tariff after validating it. Sessions keep the snapshot
// they were created with; only new sessions see the change.
func (e *Engine) PutTariff(ctx context.Context, t money.Tariff) error {
	if err := t.Validate(); err != nil {
		var ve *money.ValidationError
		if errors.As(err, &ve) {
			return Invalid(map[string]string{ve.Field: ve.Reason})
		}
		return Invalid(map[string]string{"periods": err.Error()})
	}
	return e.store.PutTariff(ctx, t)
}
