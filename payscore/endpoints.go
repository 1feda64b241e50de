package payscore

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/chargeflow/chargeflow/money"
)

// OrderLocator names one service order. Set exactly one field; if several
// are set the first of OutOrderNo, HfSeqID, ReqSeqID is sent.
type OrderLocator struct {
	OutOrderNo string // Huifu's service order number (create's reply)
	HfSeqID    string // create's hf_seq_id (sent as org_hf_seq_id)
	ReqSeqID   string // create's req_seq_id (sent as org_req_seq_id)
}

func (l OrderLocator) put(m map[string]string) error {
	switch {
	case l.OutOrderNo != "":
		m["out_order_no"] = l.OutOrderNo
	case l.HfSeqID != "":
		m["org_hf_seq_id"] = l.HfSeqID
	case l.ReqSeqID != "":
		m["org_req_seq_id"] = l.ReqSeqID
	default:
		return fmt.Errorf("%w: no order locator", ErrInvalidRequest)
	}
	return nil
}

// TimeRange is the service period. Start is required at create unless
// StartOnAccept; End is required at complete.
type TimeRange struct {
	Start         time.Time
	StartOnAccept bool // start when the user confirms (literal "OnAccept")
	StartRemark   string
	End           time.Time
	EndRemark     string
}

func (tr TimeRange) wire() TimeRangeWire {
	w := TimeRangeWire{StartTimeRemark: tr.StartRemark, EndTimeRemark: tr.EndRemark}
	if tr.StartOnAccept {
		w.StartTime = StartOnAccept
	} else if !tr.Start.IsZero() {
		w.StartTime = FormatDateTime(tr.Start)
	}
	if !tr.End.IsZero() {
		w.EndTime = FormatDateTime(tr.End)
	}
	return w
}

// PostItem is one line of post_payments or post_discounts. Both Name and
// Amount are needed for WeChat to show it; Name ≤ 20 characters and unique
// within its list.
type PostItem struct {
	Name        string
	Amount      money.Fen
	Description string
	Count       int
}

// RiskFund is the maximum the order may complete at.
type RiskFund struct {
	Name        string // default RiskFundEstimate
	Amount      money.Fen
	Description string
}

// Location is where the service starts and ends.
type Location struct {
	Start string
	End   string
}

// CreateOrderRequest creates a Pay Score service order (创建支付分).
type CreateOrderRequest struct {
	ReqSeqID            string    // ReqSeqID(session, StepCreate, n)
	ReqDate             time.Time // the day this attempt was first sent; keep it for re-sends
	ServiceIntroduction string    // ≤ 20 characters
	RiskFund            RiskFund
	TimeRange           TimeRange
	OpenID              string // required: without it every debit fails (docs/payscore.md §6)
	SubAppID            string
	SubOpenID           string
	PostPayments        []PostItem
	PostDiscounts       []PostItem
	Location            *Location
	Attach              string
	NotifyURL           string // default Config.NotifyURL
}

// CreateOrderResponse is create's reply. Package and State may be empty:
// Huifu's reply fields are not documented (docs/payscore.md §4, [decided]).
type CreateOrderResponse struct {
	RespCode   string
	OutOrderNo string
	HfSeqID    string
	Package    string // for wx.openBusinessView
	State      string
}

// Order is a service order as query reports it.
type Order struct {
	OutOrderNo       string
	State            string
	StateDescription string
	Collection       Collection
	TotalAmount      money.Fen
}

// UserConfirmed reports DOING+USER_CONFIRM: the only state in which charging
// may start.
func (o *Order) UserConfirmed() bool {
	return o.State == StateDoing && o.StateDescription == StateDescUserConfirm
}

// Completed reports DOING+MCH_COMPLETE: completed by us, payment pending.
func (o *Order) Completed() bool {
	return o.State == StateDoing && o.StateDescription == StateDescMchComplete
}

// Paid reports DONE with collection USER_PAID.
func (o *Order) Paid() bool {
	return o.State == StateDone && o.Collection.State == CollectionUserPaid
}

// Closed reports a terminal state without payment (REVOKED or EXPIRED).
func (o *Order) Closed() bool { return o.State == StateRevoked || o.State == StateExpired }

// Collection is the payment side of an order.
type Collection struct {
	State        string // USER_PAYING, USER_PAID, or "" before complete
	TotalAmount  money.Fen
	PayingAmount money.Fen
	PaidAmount   money.Fen
	Details      []CollectionDetail
}

// CollectionDetail is one payment.
type CollectionDetail struct {
	Seq           int
	Amount        money.Fen
	PaidType      string
	PaidTime      string // as sent (yyyyMMddHHmmss)
	TransactionID string
}

// CancelOrderRequest cancels a service order (取消支付分订单).
type CancelOrderRequest struct {
	Order  OrderLocator
	Reason string // ≤ 50 characters; send the same reason on every retry
}

// CompleteOrderRequest completes a service order with the amount to collect
// (完结支付分订单). Complete is accepted ONCE: after an uncertain failure,
// query the order before sending it again.
type CompleteOrderRequest struct {
	OutOrderNo string
	Amount     money.Fen // ord_amt; must equal Σ PostPayments − Σ PostDiscounts when lines are given
	// TimeRange.End is required: after the start, not after the moment of the
	// call (Beijing time, no tolerance). See ClampEndTime.
	TimeRange     TimeRange
	PostPayments  []PostItem
	PostDiscounts []PostItem
	Location      *Location
	CompleteTime  time.Time // optional
}

// RegisterDeductionRequest registers a deduction (登记扣款信息). The
// registration is single-use and valid 24 h; a failed debit needs a new one.
type RegisterDeductionRequest struct {
	ReqSeqID string // ReqSeqID(session, StepRegister, n)
	ReqDate  time.Time
	Order    OrderLocator
}

// Registration is a registered deduction. Keep ReqSeqID/HfSeqID and
// OutTradeNo: the debit needs them.
type Registration struct {
	RespCode   string
	ReqSeqID   string // echo of the request
	ReqDate    string // echo of the request, yyyyMMdd
	OutTradeNo string // WeChat's deduction number, for the debit
	HfSeqID    string // the registration's serial (deduct_hf_seq_id)
}

// DeductionStatus is query deduction's reply.
type DeductionStatus struct {
	RespCode   string
	OutTradeNo string
	HfSeqID    string // the registration's serial [decided]; may be empty
	TransStat  string // P, S or F
}

// DebitRequest deducts a registered deduction (支付分扣款). The amount is the
// completed amount; there is none in the request.
type DebitRequest struct {
	ReqSeqID string // ReqSeqID(session, StepDebit, n)
	ReqDate  time.Time
	// The registration, by one locator: its hf_seq_id when known (sent as
	// deduct_hf_seq_id, and then DeductReqSeqID is not sent), else its
	// req_seq_id (deduct_req_seq_id).
	DeductReqSeqID string
	DeductHfSeqID  string
	OutTradeNo     string // from the registration
	GoodsDesc      string
	ClientIP       string // risk_check_data.ip_address
	NotifyURL      string // default Config.NotifyURL (docs/payscore.md §5 [decided])
	Remark         string
}

// DebitResult is the debit's reply. TransStat is usually P: the outcome
// arrives by notification or query. Keep HfSeqID with ReqDate: a refund
// needs both.
type DebitResult struct {
	RespCode  string
	HfSeqID   string
	ReqDate   string // the request's req_date, yyyyMMdd
	TransStat string
}

// RefundRequest refunds (part of) a payment (扫码交易退款).
type RefundRequest struct {
	ReqSeqID string // ReqSeqID(session, StepRefund, n)
	ReqDate  time.Time
	Amount   money.Fen
	// The payment: for a debit, its ReqDate and HfSeqID; for the user's own
	// payment, the notification's TransReqDate and TransHfSeqID. Passed on
	// exactly as Huifu gave them.
	OrgReqDate string
	OrgHfSeqID string
	NotifyURL  string
	Remark     string
}

// RefundResult is the refund's reply.
type RefundResult struct {
	RespCode  string
	HfSeqID   string
	TransStat string
}

// CreateOrder creates a service order. Errors: ErrInvalidRequest (nothing
// sent) or *Error.
func (c *Client) CreateOrder(ctx context.Context, r CreateOrderRequest) (*CreateOrderResponse, error) {
	if err := need(r.ReqSeqID, "req_seq_id", r.ServiceIntroduction, "service_introduction", r.OpenID, "openid"); err != nil {
		return nil, err
	}
	if r.ReqDate.IsZero() {
		return nil, fmt.Errorf("%w: req_date", ErrInvalidRequest)
	}
	if utf8.RuneCountInString(r.ServiceIntroduction) > 20 {
		return nil, fmt.Errorf("%w: service_introduction longer than 20 characters", ErrInvalidRequest)
	}
	if r.RiskFund.Amount <= 0 {
		return nil, fmt.Errorf("%w: risk fund amount must be positive", ErrInvalidRequest)
	}
	if !r.TimeRange.StartOnAccept && r.TimeRange.Start.IsZero() {
		return nil, fmt.Errorf("%w: time_range needs a start time or StartOnAccept", ErrInvalidRequest)
	}
	notify := firstNonEmpty(r.NotifyURL, c.cfg.NotifyURL)
	if notify == "" {
		return nil, fmt.Errorf("%w: notify_url", ErrInvalidRequest)
	}
	name := firstNonEmpty(r.RiskFund.Name, RiskFundEstimate)
	d := map[string]string{
		"req_seq_id":           r.ReqSeqID,
		"req_date":             FormatDate(r.ReqDate),
		"huifu_id":             c.cfg.HuifuID,
		"service_introduction": r.ServiceIntroduction,
		"notify_url":           notify,
		"openid":               r.OpenID,
		"service_id":           c.cfg.ServiceID,
		"sub_appid":            r.SubAppID,
		"sub_openid":           r.SubOpenID,
		"attach":               r.Attach,
	}
	var err error
	if d["risk_fund"], err = jsonString(RiskFundWire{Name: name, Amount: int64(r.RiskFund.Amount), Description: r.RiskFund.Description}); err != nil {
		return nil, err
	}
	if d["time_range"], err = jsonString(r.TimeRange.wire()); err != nil {
		return nil, err
	}
	if err := putPostItems(d, r.PostPayments, r.PostDiscounts); err != nil {
		return nil, err
	}
	if err := putLocation(d, r.Location); err != nil {
		return nil, err
	}
	var f wireFields
	if err := c.Call(ctx, PathCreateOrder, d, &f); err != nil {
		return nil, err
	}
	return &CreateOrderResponse{
		RespCode:   f.str("resp_code"),
		OutOrderNo: f.str(fieldOutOrderNo),
		HfSeqID:    f.str(fieldHfSeqID),
		Package:    f.str(fieldPackage),
		State:      f.str(fieldState),
	}, nil
}

// QueryOrder reads a service order. It is always safe to call.
func (c *Client) QueryOrder(ctx context.Context, loc OrderLocator) (*Order, error) {
	d := map[string]string{"huifu_id": c.cfg.HuifuID}
	if err := loc.put(d); err != nil {
		return nil, err
	}
	var f wireFields
	if err := c.Call(ctx, PathQueryOrder, d, &f); err != nil {
		return nil, err
	}
	col, err := readCollection(f)
	if err != nil {
		return nil, unreadable(PathQueryOrder, err)
	}
	total, err := f.amount(fieldTotalAmount, inFen)
	if err != nil {
		return nil, unreadable(PathQueryOrder, err)
	}
	o := &Order{
		OutOrderNo:       f.str(fieldOutOrderNo),
		State:            f.str(fieldState),
		StateDescription: f.str(fieldStateDesc),
		TotalAmount:      total,
		Collection:       col,
	}
	return o, nil
}

// CancelOrder cancels a service order. Allowed in CREATED and
// DOING/USER_CONFIRM; after complete only while no deduction registration is
// live (docs/payscore.md §6).
func (c *Client) CancelOrder(ctx context.Context, r CancelOrderRequest) error {
	if err := need(r.Reason, "reason"); err != nil {
		return err
	}
	if utf8.RuneCountInString(r.Reason) > 50 {
		return fmt.Errorf("%w: reason longer than 50 characters", ErrInvalidRequest)
	}
	d := map[string]string{"huifu_id": c.cfg.HuifuID, "reason": r.Reason}
	if err := r.Order.put(d); err != nil {
		return err
	}
	return c.Call(ctx, PathCancelOrder, d, nil)
}

// CompleteOrder completes a service order. The client checks the amount rules
// it can (lines add up to Amount, names, End after Start) before sending;
// the risk-fund bound and end ≤ now are Huifu's to enforce.
func (c *Client) CompleteOrder(ctx context.Context, r CompleteOrderRequest) error {
	if err := need(r.OutOrderNo, "out_order_no"); err != nil {
		return err
	}
	if r.Amount < 1 {
		return fmt.Errorf("%w: ord_amt must be at least 0.01", ErrInvalidRequest)
	}
	if r.TimeRange.End.IsZero() {
		return fmt.Errorf("%w: time_range end_time", ErrInvalidRequest)
	}
	if !r.TimeRange.Start.IsZero() && !r.TimeRange.End.After(r.TimeRange.Start) {
		return fmt.Errorf("%w: end_time not after start_time", ErrInvalidRequest)
	}
	if len(r.PostPayments)+len(r.PostDiscounts) > 0 {
		var total money.Fen
		for _, p := range r.PostPayments {
			total += p.Amount
		}
		for _, p := range r.PostDiscounts {
			total -= p.Amount
		}
		if total != r.Amount {
			return fmt.Errorf("%w: post_payments − post_discounts = %s, ord_amt = %s", ErrInvalidRequest, total, r.Amount)
		}
	}
	d := map[string]string{
		"huifu_id":     c.cfg.HuifuID,
		"out_order_no": r.OutOrderNo,
		"ord_amt":      r.Amount.Yuan(),
	}
	if !r.CompleteTime.IsZero() {
		d["complete_time"] = r.CompleteTime.In(Beijing).Format(layoutCompleteTime)
	}
	var err error
	if d["time_range"], err = jsonString(r.TimeRange.wire()); err != nil {
		return err
	}
	if err := putPostItems(d, r.PostPayments, r.PostDiscounts); err != nil {
		return err
	}
	if err := putLocation(d, r.Location); err != nil {
		return err
	}
	return c.Call(ctx, PathCompleteOrder, d, nil)
}

// RegisterDeduction registers a deduction for a completed order.
func (c *Client) RegisterDeduction(ctx context.Context, r RegisterDeductionRequest) (*Registration, error) {
	if err := need(r.ReqSeqID, "req_seq_id"); err != nil {
		return nil, err
	}
	if r.ReqDate.IsZero() {
		return nil, fmt.Errorf("%w: req_date", ErrInvalidRequest)
	}
	d := map[string]string{"req_seq_id": r.ReqSeqID, "req_date": FormatDate(r.ReqDate), "huifu_id": c.cfg.HuifuID}
	if err := r.Order.put(d); err != nil {
		return nil, err
	}
	var f wireFields
	if err := c.Call(ctx, PathRegisterDeduction, d, &f); err != nil {
		return nil, err
	}
	return &Registration{
		RespCode: f.str("resp_code"), ReqSeqID: r.ReqSeqID, ReqDate: d["req_date"],
		OutTradeNo: f.str(fieldOutTradeNo), HfSeqID: f.str(fieldHfSeqID),
	}, nil
}

// QueryDeduction reads the latest deduction registration of an order.
func (c *Client) QueryDeduction(ctx context.Context, loc OrderLocator) (*DeductionStatus, error) {
	d := map[string]string{"huifu_id": c.cfg.HuifuID}
	if err := loc.put(d); err != nil {
		return nil, err
	}
	var f wireFields
	if err := c.Call(ctx, PathQueryDeduction, d, &f); err != nil {
		return nil, err
	}
	return &DeductionStatus{RespCode: f.str("resp_code"), OutTradeNo: f.str(fieldOutTradeNo), HfSeqID: f.str(fieldHfSeqID), TransStat: f.str(fieldTransStat)}, nil
}

// Debit sends payscorepay for a registration. A success reply usually says P
// (processing); the payment is confirmed by the notification or a query
// showing DONE/USER_PAID. Debit failures are often silent: the order simply
// stays unpaid and the registration shows F.
func (c *Client) Debit(ctx context.Context, r DebitRequest) (*DebitResult, error) {
	if err := need(r.ReqSeqID, "req_seq_id", r.OutTradeNo, "out_trade_no", r.GoodsDesc, "goods_desc", r.ClientIP, "client ip"); err != nil {
		return nil, err
	}
	if r.ReqDate.IsZero() {
		return nil, fmt.Errorf("%w: req_date", ErrInvalidRequest)
	}
	if r.DeductReqSeqID == "" && r.DeductHfSeqID == "" {
		return nil, fmt.Errorf("%w: deduct_req_seq_id or deduct_hf_seq_id", ErrInvalidRequest)
	}
	risk, err := jsonString(RiskCheckWire{IPAddress: r.ClientIP})
	if err != nil {
		return nil, err
	}
	d := map[string]string{
		"req_seq_id":      r.ReqSeqID,
		"req_date":        FormatDate(r.ReqDate),
		"huifu_id":        c.cfg.HuifuID,
		"out_trade_no":    r.OutTradeNo,
		"goods_desc":      r.GoodsDesc,
		"risk_check_data": risk,
		"notify_url":      firstNonEmpty(r.NotifyURL, c.cfg.NotifyURL),
		"remark":          r.Remark,
	}
	// Exactly one locator of the registration (docs/payscore.md §3): the
	// SDK documents the two as alternatives.
	if r.DeductHfSeqID != "" {
		d["deduct_hf_seq_id"] = r.DeductHfSeqID
	} else {
		d["deduct_req_seq_id"] = r.DeductReqSeqID
	}
	var f wireFields
	if err := c.Call(ctx, PathDebit, d, &f); err != nil {
		return nil, err
	}
	return &DebitResult{RespCode: f.str("resp_code"), HfSeqID: f.str(fieldHfSeqID), ReqDate: d["req_date"], TransStat: f.str(fieldTransStat)}, nil
}

// Refund refunds Amount of a payment. TransStat S means done, P pending
// (query or notification), F failed.
func (c *Client) Refund(ctx context.Context, r RefundRequest) (*RefundResult, error) {
	if err := need(r.ReqSeqID, "req_seq_id", r.OrgReqDate, "org_req_date", r.OrgHfSeqID, "org_hf_seq_id"); err != nil {
		return nil, err
	}
	if r.ReqDate.IsZero() {
		return nil, fmt.Errorf("%w: req_date", ErrInvalidRequest)
	}
	if r.Amount < 1 {
		return nil, fmt.Errorf("%w: refund amount must be at least 0.01", ErrInvalidRequest)
	}
	d := map[string]string{
		"req_seq_id":    r.ReqSeqID,
		"req_date":      FormatDate(r.ReqDate),
		"huifu_id":      c.cfg.HuifuID,
		"ord_amt":       r.Amount.Yuan(),
		"org_req_date":  r.OrgReqDate,
		"org_hf_seq_id": r.OrgHfSeqID,
		"notify_url":    r.NotifyURL,
		"remark":        r.Remark,
	}
	var f wireFields
	if err := c.Call(ctx, PathRefund, d, &f); err != nil {
		return nil, err
	}
	return &RefundResult{RespCode: f.str("resp_code"), HfSeqID: f.str(fieldHfSeqID), TransStat: f.str(fieldTransStat)}, nil
}

// ClampEndTime returns the end_time to send at complete: the measured end,
// unless it is not credible against the clock at the call (later than
// now − margin, where WeChat rejects it without tolerance), in which case
// now − margin; and never at or before start (start + 1 s then). clamped
// reports whether end was changed (the engine flags clock_skew).
func ClampEndTime(end, start, now time.Time, margin time.Duration) (t time.Time, clamped bool) {
	t = end
	if limit := now.Add(-margin); t.After(limit) {
		t, clamped = limit, true
	}
	// The wire has second resolution: compare what will be sent.
	t = t.Truncate(time.Second)
	if !start.IsZero() && !t.After(start.Truncate(time.Second)) {
		t, clamped = start.Truncate(time.Second).Add(time.Second), true
	}
	return t, clamped
}

// unreadable is the error for a verified success reply that cannot be read
// (docs/payscore.md §3): Final, so the caller records an anomaly rather than
// asking again for the same unreadable answer.
func unreadable(path string, err error) error {
	return &Error{Endpoint: path, Code: CodeSuccess, Verified: true, Err: fmt.Errorf("%w: %w", ErrUnreadableReply, err)}
}

func need(kv ...string) error {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == "" {
			return fmt.Errorf("%w: %s is required", ErrInvalidRequest, kv[i+1])
		}
	}
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func jsonString(v any) (string, error) {
	b, err := CanonicalJSON(v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func putPostItems(d map[string]string, pays, discounts []PostItem) error {
	for _, l := range []struct {
		key   string
		items []PostItem
	}{{"post_payments", pays}, {"post_discounts", discounts}} {
		if len(l.items) == 0 {
			continue
		}
		if len(l.items) > 100 {
			return fmt.Errorf("%w: %s has more than 100 items", ErrInvalidRequest, l.key)
		}
		seen := map[string]bool{}
		wire := make([]PostItemWire, 0, len(l.items))
		for _, it := range l.items {
			if it.Name == "" || utf8.RuneCountInString(it.Name) > 20 {
				return fmt.Errorf("%w: %s name must be 1-20 characters", ErrInvalidRequest, l.key)
			}
			if seen[it.Name] {
				return fmt.Errorf("%w: %s name %q repeated", ErrInvalidRequest, l.key, it.Name)
			}
			if it.Amount < 0 {
				return fmt.Errorf("%w: %s amount negative", ErrInvalidRequest, l.key)
			}
			seen[it.Name] = true
			wire = append(wire, PostItemWire{Name: it.Name, Amount: int64(it.Amount), Description: it.Description, Count: it.Count})
		}
		s, err := jsonString(wire)
		if err != nil {
			return err
		}
		d[l.key] = s
	}
	return nil
}

func putLocation(d map[string]string, l *Location) error {
	if l == nil {
		return nil
	}
	s, err := jsonString(LocationWire{StartLocation: l.Start, EndLocation: l.End})
	if err != nil {
		return err
	}
	d["location"] = s
	return nil
}
