package sandbox

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
)

// orderLifetime: a CREATED order left alone this long becomes EXPIRED (docs/payscore.md §6).
const orderLifetime = 30 * 24 * time.Hour

type order struct {
	outOrderNo, hfSeqID, reqSeqID, reqDate string
	huifuID, notifyURL, openID, intro      string
	state, stateDesc, collectionState      string
	riskFund, total                        money.Fen
	startOnAccept                          bool
	start, end                             time.Time // create's; end may be zero
	endSent                                time.Time // complete's end_time
	createdAt, confirmedAt                 time.Time
	refused                                bool
	completes                              int
	regs                                   []*registration
	payments                               []*payment
}

type registration struct {
	o                             *order
	reqSeqID, reqDate, outTradeNo string
	hfSeqID                       string
	createdAt                     time.Time
	used                          bool
	transStat                     string // after use: S or F
}

type payment struct {
	o                          *order
	HfSeqID, ReqSeqID, ReqDate string
	Amount, Refunded           money.Fen
	ByUser                     bool
	refunds                    []refundLine // for the trade bill (bill.go)
}

type seenRequest struct {
	path  string
	data  string // canonical data without sign
	reply map[string]string
}

// reply is an operation's answer; notes are notifications to send once the
// lock is released.
type reply = map[string]string

type note struct {
	url, kind, reqSeqID, outOrderNo string
	fields                          map[string]string
}

func ok(fields map[string]string) reply {
	r := reply{"resp_code": payscore.CodeSuccess, "resp_desc": "成功"}
	for k, v := range fields {
		r[k] = v
	}
	return r
}

// fail answers a Huifu code with the WeChat name in resp_desc, the way the
// profile decided Huifu carries it.
func fail(code, wechat, msg string) reply {
	desc := msg
	if wechat != "" {
		desc = wechat + ":" + msg
	}
	return reply{"resp_code": code, "resp_desc": desc}
}

func paramError(msg string) reply {
	return fail(payscore.CodeBadParameter, payscore.WeChatParamError, msg)
}

func stateError(msg string) reply {
	return fail(payscore.CodeLogicError, payscore.WeChatInvalidOrderState, msg)
}

func notFound(msg string) reply {
	return fail(payscore.CodeNotFound, payscore.WeChatOrderNotExist, msg)
}

func (s *Sandbox) nextID(prefix string) string {
	s.seq++
	return fmt.Sprintf("%s%s%08d", prefix, s.now().In(payscore.Beijing).Format("20060102150405"), s.seq)
}

// refresh applies the passing of time: CREATED expires after 30 days.
func (s *Sandbox) refresh(o *order) {
	if o.state == payscore.StateCreated && s.now().Sub(o.createdAt) >= orderLifetime {
		o.state, o.stateDesc = payscore.StateExpired, ""
	}
}

func (s *Sandbox) locate(d map[string]string) (*order, reply) {
	var o *order
	switch {
	case d["out_order_no"] != "":
		o = s.orders[d["out_order_no"]]
	case d["org_hf_seq_id"] != "":
		o = s.byHfSeq[d["org_hf_seq_id"]]
	case d["org_req_seq_id"] != "":
		o = s.byCreateReq[d["org_req_seq_id"]]
	default:
		return nil, paramError("out_order_no/org_hf_seq_id/org_req_seq_id 必填其一")
	}
	if o == nil || (d["huifu_id"] != "" && o.huifuID != d["huifu_id"]) {
		return nil, notFound("订单不存在")
	}
	s.refresh(o)
	return o, nil
}

// terminalError is the error for an operation on a finished order.
func terminalError(o *order) reply {
	switch o.state {
	case payscore.StateDone:
		return fail(payscore.CodeLogicError, payscore.WeChatOrderDone, "订单已完成")
	case payscore.StateRevoked:
		return fail(payscore.CodeLogicError, payscore.WeChatOrderCanceled, "订单已取消")
	case payscore.StateExpired:
		return stateError("订单已失效")
	}
	return nil
}

func required(d map[string]string, keys ...string) reply {
	for _, k := range keys {
		if d[k] == "" {
			return paramError(k + " 不能为空")
		}
	}
	return nil
}

func validDate(s string) bool {
	_, err := payscore.ParseDate(s)
	return err == nil
}

func parsePostItems(s string) ([]payscore.PostItemWire, reply) {
	if s == "" {
		return nil, nil
	}
	var items []payscore.PostItemWire
	if err := json.Unmarshal([]byte(s), &items); err != nil {
		return nil, paramError("post_payments/post_discounts 格式错误")
	}
	if len(items) > 100 {
		return nil, paramError("付费项目不能超过100条")
	}
	seen := map[string]bool{}
	for _, it := range items {
		if it.Name == "" || utf8.RuneCountInString(it.Name) > 20 || seen[it.Name] || it.Amount < 0 {
			return nil, paramError("付费项目名称需唯一且不超过20字，金额不能为负")
		}
		seen[it.Name] = true
	}
	return items, nil
}

func sum(items []payscore.PostItemWire) money.Fen {
	var t money.Fen
	for _, it := range items {
		t += money.Fen(it.Amount)
	}
	return t
}

func (s *Sandbox) create(d map[string]string) (reply, []note) {
	if r := required(d, "req_date", "req_seq_id", "huifu_id", "service_introduction", "risk_fund", "time_range", "notify_url"); r != nil {
		return r, nil
	}
	if !validDate(d["req_date"]) {
		return paramError("req_date 格式错误"), nil
	}
	if r := s.checkServiceID(d["service_id"]); r != nil {
		return r, nil
	}
	if utf8.RuneCountInString(d["service_introduction"]) > 20 {
		return paramError("service_introduction 不能超过20字"), nil
	}
	var rf payscore.RiskFundWire
	if err := json.Unmarshal([]byte(d["risk_fund"]), &rf); err != nil || rf.Name == "" || rf.Amount <= 0 {
		return paramError("risk_fund 格式错误"), nil
	}
	var tr payscore.TimeRangeWire
	if err := json.Unmarshal([]byte(d["time_range"]), &tr); err != nil || tr.StartTime == "" {
		return paramError("time_range.start_time 必填"), nil
	}
	o := &order{huifuID: d["huifu_id"], reqSeqID: d["req_seq_id"], reqDate: d["req_date"], notifyURL: d["notify_url"],
		openID: d["openid"], intro: d["service_introduction"], riskFund: money.Fen(rf.Amount), createdAt: s.now()}
	if tr.StartTime == payscore.StartOnAccept {
		o.startOnAccept = true
	} else {
		t, err := payscore.ParseDateTime(tr.StartTime)
		if err != nil {
			return paramError("time_range.start_time 格式错误"), nil
		}
		o.start = t
	}
	if tr.EndTime != "" {
		t, err := payscore.ParseDateTime(tr.EndTime)
		if err != nil || (!o.start.IsZero() && !t.After(o.start)) {
			return paramError("time_range.end_time 错误"), nil
		}
		o.end = t
	}
	pays, r := parsePostItems(d["post_payments"])
	if r != nil {
		return r, nil
	}
	discounts, r := parsePostItems(d["post_discounts"])
	if r != nil {
		return r, nil
	}
	if len(pays) > 0 && sum(pays)-sum(discounts) > o.riskFund {
		return paramError("付费项目金额不能超过风险金"), nil
	}
	o.outOrderNo = s.nextID("SO")
	o.hfSeqID = s.nextID("HF")
	o.state = payscore.StateCreated
	s.orders[o.outOrderNo] = o
	s.byHfSeq[o.hfSeqID] = o
	s.byCreateReq[o.reqSeqID] = o
	if s.autoConfirm > 0 {
		s.goLocked(func() { s.autoConfirmAfter(o.outOrderNo, s.autoConfirm) })
	}
	return ok(map[string]string{
		"huifu_id": o.huifuID, "req_seq_id": o.reqSeqID, "req_date": o.reqDate,
		"out_order_no": o.outOrderNo, "hf_seq_id": o.hfSeqID,
		"package": "sandbox_package_" + o.outOrderNo, "state": o.state,
	}), nil
}

func (s *Sandbox) query(d map[string]string) (reply, []note) {
	if r := required(d, "huifu_id"); r != nil {
		return r, nil
	}
	o, r := s.locate(d)
	if r != nil {
		return r, nil
	}
	f := map[string]string{
		"huifu_id": o.huifuID, "out_order_no": o.outOrderNo, "state": o.state,
		"state_description": o.stateDesc, "service_introduction": o.intro,
	}
	if o.collectionState != "" {
		col := payscore.CollectionWire{State: o.collectionState, TotalAmount: int64(o.total)}
		for i, p := range o.payments {
			col.PaidAmount += int64(p.Amount)
			col.Details = append(col.Details, payscore.CollectionDetailWire{Seq: i + 1, Amount: int64(p.Amount),
				PaidType: map[bool]string{true: "NEWTON", false: "MCH"}[p.ByUser], TransactionID: p.HfSeqID})
		}
		col.PayingAmount = col.TotalAmount - col.PaidAmount
		b, _ := payscore.CanonicalJSON(col)
		f["collection"] = string(b)
		f["total_amount"] = fmt.Sprint(int64(o.total))
	}
	return ok(f), nil
}

// liveRegistration is the order's registration that can still be debited.
func (s *Sandbox) liveRegistration(o *order) *registration {
	for _, g := range o.regs {
		if !g.used && s.now().Sub(g.createdAt) < s.opts.RegistrationTTL {
			return g
		}
	}
	return nil
}

func (s *Sandbox) cancelOrder(d map[string]string) (reply, []note) {
	if r := required(d, "huifu_id", "reason"); r != nil {
		return r, nil
	}
	if utf8.RuneCountInString(d["reason"]) > 50 {
		return paramError("reason 不能超过50字"), nil
	}
	o, r := s.locate(d)
	if r != nil {
		return r, nil
	}
	if r := terminalError(o); r != nil {
		return r, nil
	}
	if o.stateDesc == payscore.StateDescMchComplete {
		if !s.opts.AllowCancelAfterComplete {
			return stateError("订单已完结，不能取消"), nil
		}
		if s.liveRegistration(o) != nil {
			return stateError("存在未过期的扣款登记，不能取消"), nil
		}
	}
	o.state, o.stateDesc = payscore.StateRevoked, ""
	return ok(map[string]string{"huifu_id": o.huifuID, "out_order_no": o.outOrderNo}), nil
}

func (s *Sandbox) complete(d map[string]string) (reply, []note) {
	if r := required(d, "huifu_id", "out_order_no", "ord_amt", "time_range"); r != nil {
		return r, nil
	}
	amt, err := money.ParseYuan(d["ord_amt"])
	if err != nil || amt < 1 {
		return paramError("ord_amt 格式错误"), nil
	}
	o, r := s.locate(d)
	if r != nil {
		return r, nil
	}
	if r := terminalError(o); r != nil {
		return r, nil
	}
	switch {
	case o.state == payscore.StateCreated:
		return stateError("用户未确认，不能完结"), nil
	case o.stateDesc == payscore.StateDescMchComplete:
		return stateError("订单已完结"), nil
	}
	var tr payscore.TimeRangeWire
	if err := json.Unmarshal([]byte(d["time_range"]), &tr); err != nil {
		return paramError("time_range 格式错误"), nil
	}
	start := o.start
	if o.startOnAccept {
		start = o.confirmedAt
	}
	if tr.StartTime != "" && tr.StartTime != payscore.StartOnAccept {
		t, err := payscore.ParseDateTime(tr.StartTime)
		if err != nil {
			return paramError("time_range.start_time 格式错误"), nil
		}
		start = t
	}
	end := o.end
	if tr.EndTime != "" {
		t, err := payscore.ParseDateTime(tr.EndTime)
		if err != nil {
			return paramError("time_range.end_time 格式错误"), nil
		}
		end = t
	}
	switch {
	case end.IsZero():
		return paramError("time_range.end_time 必填"), nil
	case !end.After(start.Truncate(time.Second)):
		return paramError("服务结束时间必须晚于开始时间"), nil
	case end.After(s.now()):
		return paramError("实际结束时间不能晚于使用完结接口的时间"), nil
	}
	if ct := d["complete_time"]; ct != "" {
		if _, err := payscore.ParseDateTime(ct); err != nil {
			return paramError("complete_time 格式错误"), nil
		}
	}
	pays, r := parsePostItems(d["post_payments"])
	if r != nil {
		return r, nil
	}
	discounts, r := parsePostItems(d["post_discounts"])
	if r != nil {
		return r, nil
	}
	if len(pays)+len(discounts) > 0 && sum(pays)-sum(discounts) != amt {
		return paramError("付费项目金额与优惠金额之差须等于总金额"), nil
	}
	if amt > o.riskFund {
		return paramError("总金额不能超过风险金额"), nil
	}
	o.stateDesc, o.collectionState, o.total, o.endSent = payscore.StateDescMchComplete, payscore.CollectionUserPaying, amt, end
	o.completes++
	return ok(map[string]string{"huifu_id": o.huifuID, "out_order_no": o.outOrderNo, "ord_amt": amt.Yuan()}), nil
}

// payable refuses an order that cannot take a registration or a payment.
func payable(o *order) reply {
	if r := terminalError(o); r != nil {
		return r
	}
	if o.stateDesc != payscore.StateDescMchComplete {
		return stateError("订单未完结")
	}
	return nil
}

func (s *Sandbox) register(d map[string]string) (reply, []note) {
	if r := required(d, "req_date", "req_seq_id", "huifu_id"); r != nil {
		return r, nil
	}
	if !validDate(d["req_date"]) {
		return paramError("req_date 格式错误"), nil
	}
	o, r := s.locate(d)
	if r != nil {
		return r, nil
	}
	if r := payable(o); r != nil {
		return r, nil
	}
	if s.liveRegistration(o) != nil {
		return stateError("存在未使用的扣款登记"), nil
	}
	g := &registration{o: o, reqSeqID: d["req_seq_id"], reqDate: d["req_date"], outTradeNo: s.nextID("WXT"),
		hfSeqID: s.nextID("HF"), createdAt: s.now()}
	o.regs = append(o.regs, g)
	s.regsByReq[g.reqSeqID] = g
	s.regsByHf[g.hfSeqID] = g
	return ok(map[string]string{"huifu_id": o.huifuID, "req_seq_id": g.reqSeqID, "req_date": g.reqDate,
		"out_order_no": o.outOrderNo, "out_trade_no": g.outTradeNo, "hf_seq_id": g.hfSeqID}), nil
}

func (s *Sandbox) regStat(g *registration) string {
	switch {
	case g.used:
		return g.transStat
	case s.now().Sub(g.createdAt) >= s.opts.RegistrationTTL:
		return payscore.TransFailed
	default:
		return payscore.TransProcessing
	}
}

func (s *Sandbox) queryDeduction(d map[string]string) (reply, []note) {
	if r := required(d, "huifu_id"); r != nil {
		return r, nil
	}
	o, r := s.locate(d)
	if r != nil {
		return r, nil
	}
	if len(o.regs) == 0 {
		return notFound("无扣款登记"), nil
	}
	g := o.regs[len(o.regs)-1]
	return ok(map[string]string{"huifu_id": o.huifuID, "out_order_no": o.outOrderNo, "out_trade_no": g.outTradeNo,
		"hf_seq_id": g.hfSeqID, "trans_stat": s.regStat(g)}), nil
}

func (s *Sandbox) debit(d map[string]string) (reply, []note) {
	if r := required(d, "req_date", "req_seq_id", "huifu_id", "out_trade_no", "goods_desc", "risk_check_data"); r != nil {
		return r, nil
	}
	if !validDate(d["req_date"]) {
		return paramError("req_date 格式错误"), nil
	}
	var risk map[string]any
	if json.Unmarshal([]byte(d["risk_check_data"]), &risk) != nil || risk == nil {
		return paramError("risk_check_data 格式错误"), nil
	}
	var g *registration
	switch {
	case d["deduct_req_seq_id"] != "" && d["deduct_hf_seq_id"] != "":
		// The two are alternatives (docs/payscore.md §3): one locator only.
		return paramError("deduct_req_seq_id/deduct_hf_seq_id 只能填其一"), nil
	case d["deduct_req_seq_id"] != "":
		g = s.regsByReq[d["deduct_req_seq_id"]]
	case d["deduct_hf_seq_id"] != "":
		g = s.regsByHf[d["deduct_hf_seq_id"]]
	default:
		return paramError("deduct_req_seq_id/deduct_hf_seq_id 必填其一"), nil
	}
	if g == nil || g.o.huifuID != d["huifu_id"] {
		return notFound("扣款登记不存在"), nil
	}
	if g.outTradeNo != d["out_trade_no"] {
		return paramError("out_trade_no 与扣款登记不符"), nil
	}
	o := g.o
	s.refresh(o)
	if r := payable(o); r != nil {
		return r, nil
	}
	switch {
	case g.used:
		return stateError("扣款登记已使用"), nil
	case s.now().Sub(g.createdAt) >= s.opts.RegistrationTTL:
		return stateError("扣款登记已过期"), nil
	}
	g.used = true
	hf := s.nextID("HF")
	resp := ok(map[string]string{"huifu_id": o.huifuID, "req_seq_id": d["req_seq_id"], "req_date": d["req_date"],
		"hf_seq_id": hf, "out_trade_no": g.outTradeNo, "trans_stat": payscore.TransProcessing})
	resp["resp_code"], resp["resp_desc"] = payscore.CodeAccepted, "处理中"
	// Silent failure (docs/payscore.md §6): no error, no notification; the order stays unpaid.
	if s.failDebits > 0 || o.openID == "" {
		if s.failDebits > 0 {
			s.failDebits--
		}
		g.transStat = payscore.TransFailed
		return resp, nil
	}
	g.transStat = payscore.TransSucceeded
	p := &payment{o: o, HfSeqID: hf, ReqSeqID: d["req_seq_id"], ReqDate: d["req_date"], Amount: o.total}
	n := s.pay(o, p, firstNonEmpty(d["notify_url"], o.notifyURL))
	return resp, []note{n}
}

// pay records a successful payment of the whole order and its notification.
func (s *Sandbox) pay(o *order, p *payment, url string) note {
	o.state, o.stateDesc, o.collectionState = payscore.StateDone, "", payscore.CollectionUserPaid
	o.payments = append(o.payments, p)
	s.payments[p.ReqDate+"/"+p.HfSeqID] = p
	return note{url: url, kind: string(payscore.KindPaymentSucceeded), reqSeqID: p.ReqSeqID, outOrderNo: o.outOrderNo,
		fields: map[string]string{
			"resp_code": payscore.CodeSuccess, "resp_desc": "交易成功", "huifu_id": o.huifuID,
			"req_seq_id": p.ReqSeqID, "req_date": p.ReqDate, "out_order_no": o.outOrderNo,
			"trans_hf_seq_id": p.HfSeqID, "trans_req_date": p.ReqDate, "trans_amt": p.Amount.Yuan(),
			"trans_stat": payscore.TransSucceeded,
		}}
}

func (s *Sandbox) refund(d map[string]string) (reply, []note) {
	if r := required(d, "req_date", "req_seq_id", "huifu_id", "ord_amt", "org_req_date", "org_hf_seq_id"); r != nil {
		return r, nil
	}
	if !validDate(d["req_date"]) {
		return paramError("req_date 格式错误"), nil
	}
	amt, err := money.ParseYuan(d["ord_amt"])
	if err != nil || amt < 1 {
		return paramError("ord_amt 格式错误"), nil
	}
	p := s.payments[d["org_req_date"]+"/"+d["org_hf_seq_id"]]
	if p == nil || p.o.huifuID != d["huifu_id"] {
		return notFound("原交易不存在"), nil
	}
	if amt > p.Amount-p.Refunded {
		return fail(payscore.CodeLogicError, "", "退款金额超过可退金额"), nil
	}
	p.Refunded += amt
	hf := s.nextID("HF")
	p.refunds = append(p.refunds, refundLine{ReqSeqID: d["req_seq_id"], ReqDate: d["req_date"], HfSeqID: hf, Amount: amt})
	return ok(map[string]string{"huifu_id": p.o.huifuID, "req_seq_id": d["req_seq_id"], "req_date": d["req_date"],
		"hf_seq_id": hf, "ord_amt": amt.Yuan(), "trans_stat": payscore.TransSucceeded,
		"org_req_date": p.ReqDate, "org_hf_seq_id": p.HfSeqID}), nil
}

// userOrderLocked finds the order the simulated user acts on. s.mu is held.
func (s *Sandbox) userOrderLocked(outOrderNo string) (*order, error) {
	if o := s.orders[outOrderNo]; o != nil {
		return o, nil
	}
	return nil, fmt.Errorf("sandbox: no order %q", outOrderNo)
}

// Confirm plays the user confirming the order in WeChat: CREATED becomes
// DOING/USER_CONFIRM and the user-confirmed notification goes to create's
// notify_url.
func (s *Sandbox) Confirm(outOrderNo string) error {
	s.mu.Lock()
	o, err := s.userOrderLocked(outOrderNo)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.refresh(o)
	if o.state != payscore.StateCreated {
		s.mu.Unlock()
		return fmt.Errorf("sandbox: order %s is %s, not CREATED", outOrderNo, o.state)
	}
	o.state, o.stateDesc, o.confirmedAt = payscore.StateDoing, payscore.StateDescUserConfirm, s.now()
	n := note{url: o.notifyURL, kind: string(payscore.KindUserConfirmed), reqSeqID: o.reqSeqID, outOrderNo: o.outOrderNo,
		fields: map[string]string{
			"resp_code": payscore.CodeSuccess, "resp_desc": "用户确认成功", "huifu_id": o.huifuID,
			"req_seq_id": o.reqSeqID, "req_date": o.reqDate, "out_order_no": o.outOrderNo,
			"state": payscore.StateDoing, "state_description": payscore.StateDescUserConfirm, "openid": o.openID,
		}}
	s.saveLocked()
	s.sendLocked([]note{n})
	s.mu.Unlock()
	return nil
}

// Refuse plays the user (or WeChat) refusing the confirmation: the order
// stays CREATED (docs/payscore.md §6) and nothing is notified.
func (s *Sandbox) Refuse(outOrderNo string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, err := s.userOrderLocked(outOrderNo)
	if err != nil {
		return err
	}
	if o.state != payscore.StateCreated {
		return fmt.Errorf("sandbox: order %s is %s, not CREATED", outOrderNo, o.state)
	}
	o.refused = true
	s.saveLocked()
	return nil
}

// PayByUser plays the user paying a completed order in WeChat themselves
// (主动支付): the order becomes DONE/USER_PAID and a payment-success
// notification carries Huifu's own trans_hf_seq_id / trans_req_date. A live
// registration can no longer be debited.
func (s *Sandbox) PayByUser(outOrderNo string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, err := s.userOrderLocked(outOrderNo)
	if err != nil {
		return err
	}
	s.refresh(o)
	if r := payable(o); r != nil {
		return fmt.Errorf("sandbox: order %s cannot be paid: %s", outOrderNo, r["resp_desc"])
	}
	p := &payment{o: o, HfSeqID: s.nextID("HF"), ReqSeqID: s.nextID("UP"), ReqDate: payscore.FormatDate(s.now()), Amount: o.total, ByUser: true}
	n := s.pay(o, p, o.notifyURL)
	s.saveLocked()
	s.sendLocked([]note{n})
	return nil
}

// Order is a snapshot of a service order, for tests and the control API.
type Order struct {
	OutOrderNo       string         `json:"out_order_no"`
	HfSeqID          string         `json:"hf_seq_id"`
	ReqSeqID         string         `json:"req_seq_id"`
	ReqDate          string         `json:"req_date"`
	State            string         `json:"state"`
	StateDescription string         `json:"state_description,omitempty"`
	CollectionState  string         `json:"collection_state,omitempty"`
	OpenID           string         `json:"openid,omitempty"`
	RiskFund         money.Fen      `json:"risk_fund_fen"`
	Total            money.Fen      `json:"total_fen"`
	EndTime          time.Time      `json:"end_time,omitzero"`
	Refused          bool           `json:"refused,omitempty"`
	Completes        int            `json:"completes"`
	Registrations    []Registration `json:"registrations,omitempty"`
	Payments         []Payment      `json:"payments,omitempty"`
}

// Registration is a snapshot of a deduction registration.
type Registration struct {
	ReqSeqID   string    `json:"req_seq_id"`
	OutTradeNo string    `json:"out_trade_no"`
	HfSeqID    string    `json:"hf_seq_id"`
	CreatedAt  time.Time `json:"created_at"`
	TransStat  string    `json:"trans_stat"` // P (live), S, F (failed or expired)
}

// Payment is a snapshot of a payment of an order.
type Payment struct {
	ReqSeqID string    `json:"req_seq_id"`
	ReqDate  string    `json:"req_date"`
	HfSeqID  string    `json:"hf_seq_id"`
	Amount   money.Fen `json:"amount_fen"`
	Refunded money.Fen `json:"refunded_fen"`
	ByUser   bool      `json:"by_user"`
}

// Order returns a snapshot of the order, or false if there is none.
func (s *Sandbox) Order(outOrderNo string) (Order, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.orders[outOrderNo]
	if o == nil {
		return Order{}, false
	}
	s.refresh(o)
	v := Order{OutOrderNo: o.outOrderNo, HfSeqID: o.hfSeqID, ReqSeqID: o.reqSeqID, ReqDate: o.reqDate, State: o.state,
		StateDescription: o.stateDesc, CollectionState: o.collectionState, OpenID: o.openID, RiskFund: o.riskFund,
		Total: o.total, EndTime: o.endSent, Refused: o.refused, Completes: o.completes}
	for _, g := range o.regs {
		v.Registrations = append(v.Registrations, Registration{ReqSeqID: g.reqSeqID, OutTradeNo: g.outTradeNo,
			HfSeqID: g.hfSeqID, CreatedAt: g.createdAt, TransStat: s.regStat(g)})
	}
	for _, p := range o.payments {
		v.Payments = append(v.Payments, Payment{ReqSeqID: p.ReqSeqID, ReqDate: p.ReqDate, HfSeqID: p.HfSeqID,
			Amount: p.Amount, Refunded: p.Refunded, ByUser: p.ByUser})
	}
	return v, true
}

// Orders lists the out_order_no of every order.
func (s *Sandbox) Orders() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.orders))
	for no := range s.orders {
		out = append(out, no)
	}
	return out
}

// operations are the Huifu endpoints the sandbox implements.
var operations = map[string]func(*Sandbox, map[string]string) (reply, []note){
	payscore.PathCreateOrder:       (*Sandbox).create,
	payscore.PathQueryOrder:        (*Sandbox).query,
	payscore.PathCancelOrder:       (*Sandbox).cancelOrder,
	payscore.PathCompleteOrder:     (*Sandbox).complete,
	payscore.PathRegisterDeduction: (*Sandbox).register,
	payscore.PathQueryDeduction:    (*Sandbox).queryDeduction,
	payscore.PathDebit:             (*Sandbox).debit,
	payscore.PathRefund:            (*Sandbox).refund,
	payscore.PathQueryRefund:       (*Sandbox).queryRefund,
}
