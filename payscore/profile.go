package payscore

// This file is the wire profile (docs/payscore.md) in
// code: paths, codes, states, field names, and EVERY [decided] item — the
// choices the public material is silent on. When Huifu's test host proves
// one wrong, it is corrected here and nowhere else. Items marked [decided]
// are ours; the rest are [sdk]/[wx] facts kept beside them for reference.

import (
	"strings"
	"time"

	"github.com/chargeflow/chargeflow/money"
)

// Endpoint paths, under Config.BaseURL (docs/payscore.md §4) [sdk].
const (
	PathCreateOrder       = "/v2/trade/payscore/serviceorder/create"
	PathQueryOrder        = "/v2/trade/payscore/serviceorder/query"
	PathCancelOrder       = "/v2/trade/payscore/serviceorder/cancel"
	PathCompleteOrder     = "/v2/trade/payscore/serviceorder/complete"
	PathRegisterDeduction = "/v2/trade/payscore/deduct/regitster" // sic: misspelt so in every SDK
	PathQueryDeduction    = "/v2/trade/payscore/deduct/query"
	PathDebit             = "/v2/trade/payscore/pay/payscorepay"
	PathRefund            = "/v2/trade/payment/scanpay/refund"
	PathQueryRefund       = "/v2/trade/payment/scanpay/refundquery" // 扫码交易退款查询
)

// resp_code values (docs/payscore.md §3) [sdk docs].
const (
	CodeSuccess        = "00000000" // processed
	CodeAccepted       = "00000100" // accepted / in progress: not a failure
	CodeBadParameter   = "10000000"
	CodeDuplicate      = "20000000" // duplicate req_seq_id
	CodeTooFrequent    = "20000001"
	CodeNotFound       = "20000004"
	CodeLogicError     = "21000000"
	CodeProductConfig  = "22000000"
	CodeMerchantConfig = "22000002"
	CodeRisk           = "90000000"
	CodeChannelBusy    = "91111119" // 通道异常，请稍后重试: retryable
	CodeUnknown        = "98888888" // retryable
	CodeSystemError    = "99999999" // retryable
)

// knownCode: the codes this profile knows the meaning of. A reply with any
// other code is "uncertain": the call may have executed, settle by query
// (docs/payscore.md §3).
func knownCode(code string) bool {
	switch code {
	case CodeSuccess, CodeAccepted, CodeBadParameter, CodeDuplicate, CodeTooFrequent, CodeNotFound, CodeLogicError,
		CodeProductConfig, CodeMerchantConfig, CodeRisk, CodeChannelBusy, CodeUnknown, CodeSystemError:
		return true
	}
	return false
}

// descStaleReqDate is what Huifu says, with CodeBadParameter, of a
// req_date that is not its today (请求日期必须是当前日期) [decided: matched as
// a substring of resp_desc]. Nothing executed; the request may be sent again
// as a new attempt dated today — a clock a little off at midnight must not
// turn a debit into a final refusal.
const descStaleReqDate = "请求日期"

// isStaleDateRefusal: a bad-parameter refusal of the req_date itself.
func isStaleDateRefusal(code, desc string) bool {
	return code == CodeBadParameter && strings.Contains(desc, descStaleReqDate)
}

// isSuccessCode: both "processed" and "accepted" mean not a failure; the
// business outcome comes from status fields or a later query.
func isSuccessCode(code string) bool { return code == CodeSuccess || code == CodeAccepted }

// isRetryableCode: Huifu's unknown/system errors and a busy channel may be
// retried with the same req_seq_id (the same day); the request may have
// run, so they also make a call uncertain.
func isRetryableCode(code string) bool {
	return code == CodeUnknown || code == CodeSystemError || code == CodeChannelBusy
}

// WeChat error names that Huifu carries in resp_desc [decided: carried as a
// substring of resp_desc, e.g. "ORDER_DONE:订单已完成"]. Tested by the Is*
// helpers in errors.go.
const (
	WeChatParamError        = "PARAM_ERROR"
	WeChatInvalidOrderState = "INVALID_ORDER_STATE"
	WeChatOrderCanceled     = "ORDER_CANCELED"
	WeChatOrderDone         = "ORDER_DONE"
	WeChatOrderNotExist     = "ORDER_NOT_EXIST"
	WeChatFrequencyLimited  = "FREQUENCY_LIMITED"
	WeChatSystemError       = "SYSTEM_ERROR"
)

var wechatNames = []string{
	// No name is a substring of another, so the order does not matter.
	WeChatInvalidOrderState, WeChatFrequencyLimited, WeChatOrderNotExist,
	WeChatOrderCanceled, WeChatSystemError, WeChatParamError, WeChatOrderDone,
}

// wechatCode finds a WeChat error name in resp_desc [decided].
func wechatCode(desc string) string {
	for _, n := range wechatNames {
		if strings.Contains(desc, n) {
			return n
		}
	}
	return ""
}

// Service-order states (docs/payscore.md §6) [wx].
const (
	StateCreated = "CREATED"
	StateDoing   = "DOING"
	StateDone    = "DONE"
	StateRevoked = "REVOKED"
	StateExpired = "EXPIRED"

	StateDescUserConfirm = "USER_CONFIRM"
	StateDescMchComplete = "MCH_COMPLETE"

	CollectionUserPaying = "USER_PAYING"
	CollectionUserPaid   = "USER_PAID"
)

// Transaction states of a debit, a deduction registration or a refund.
const (
	TransProcessing = "P" // [decided] a debit answers P while WeChat processes it
	TransSucceeded  = "S"
	TransFailed     = "F"
)

// RiskFundEstimate is the risk fund name for charging (docs/payscore.md §4) [wx].
const RiskFundEstimate = "ESTIMATE_ORDER_COST"

// StartOnAccept is the literal start_time meaning "when the user confirms".
const StartOnAccept = "OnAccept"

// Wire layouts: always Beijing time, UTC+8 without DST (docs/payscore.md §1) [sdk][wx].
const (
	layoutDate     = "20060102"
	layoutDateTime = "20060102150405"
	// layoutCompleteTime is complete_time's format [decided].
	layoutCompleteTime = layoutDateTime
)

// Beijing is the fixed UTC+8 zone of every date on the wire. A fixed zone,
// never time.Local: the host's zone must not change what is sent.
var Beijing = money.Beijing

// FormatDate formats t as req_date (yyyyMMdd, Beijing time).
func FormatDate(t time.Time) string { return t.In(Beijing).Format(layoutDate) }

// FormatDateTime formats t as yyyyMMddHHmmss, Beijing time.
func FormatDateTime(t time.Time) string { return t.In(Beijing).Format(layoutDateTime) }

// ParseDateTime parses yyyyMMddHHmmss as Beijing time.
func ParseDateTime(s string) (time.Time, error) {
	return time.ParseInLocation(layoutDateTime, s, Beijing)
}

// ParseDate parses yyyyMMdd as midnight Beijing time.
func ParseDate(s string) (time.Time, error) { return time.ParseInLocation(layoutDate, s, Beijing) }

// Nested structures are JSON strings inside the flat data (docs/payscore.md §1) [sdk].
// Their amounts are integer fen, as in WeChat's own API [decided]: should
// Huifu want yuan here, these four types are the only place to change.

// RiskFundWire is risk_fund's JSON.
type RiskFundWire struct {
	Name        string `json:"name"`
	Amount      int64  `json:"amount"` // fen [decided]
	Description string `json:"description,omitempty"`
}

// PostItemWire is one element of post_payments / post_discounts.
type PostItemWire struct {
	Name        string `json:"name"`
	Amount      int64  `json:"amount"` // fen [decided]
	Description string `json:"description,omitempty"`
	Count       int    `json:"count,omitempty"`
}

// TimeRangeWire is time_range's JSON.
type TimeRangeWire struct {
	StartTime       string `json:"start_time,omitempty"`
	StartTimeRemark string `json:"start_time_remark,omitempty"`
	EndTime         string `json:"end_time,omitempty"`
	EndTimeRemark   string `json:"end_time_remark,omitempty"`
}

// LocationWire is location's JSON.
type LocationWire struct {
	StartLocation string `json:"start_location,omitempty"`
	EndLocation   string `json:"end_location,omitempty"`
}

// RiskCheckWire is risk_check_data's JSON for a debit.
type RiskCheckWire struct {
	IPAddress string `json:"ip_address"`
}

// CollectionWire is the query reply's collection [decided: sent as a JSON
// string; an object is tolerated, see readCollection]. Amounts in fen
// [decided]; fen strings and yuan strings are tolerated too.
type CollectionWire struct {
	State        string                 `json:"state"`
	TotalAmount  int64                  `json:"total_amount"`
	PayingAmount int64                  `json:"paying_amount"`
	PaidAmount   int64                  `json:"paid_amount"`
	Details      []CollectionDetailWire `json:"details,omitempty"`
}

// CollectionDetailWire is one payment in a collection.
type CollectionDetailWire struct {
	Seq           int    `json:"seq"`
	Amount        int64  `json:"amount"`
	PaidType      string `json:"paid_type"`
	PaidTime      string `json:"paid_time"`
	TransactionID string `json:"transaction_id"`
}

// Reply fields chargeflow relies on beyond resp_code (docs/payscore.md §4). Where a
// field is [decided], its absence is tolerated by the typed methods.
const (
	fieldOutOrderNo  = "out_order_no" // create [seed], query
	fieldHfSeqID     = "hf_seq_id"
	fieldPackage     = "package" // create [decided]; may be missing
	fieldState       = "state"   // create [decided]; may be missing
	fieldStateDesc   = "state_description"
	fieldCollection  = "collection"   // query [decided: JSON string]
	fieldTotalAmount = "total_amount" // query [decided: fen]
	fieldOutTradeNo  = "out_trade_no" // register [seed], query deduction [decided]
	fieldTransStat   = "trans_stat"   // query deduction, debit [decided], refund
	fieldOrdAmt      = "ord_amt"      // refund query [decided: yuan, as the refund's own]
	fieldTransAmt    = "trans_amt"    // payment notification: yuan (fen tolerated)
)

// Notifications (docs/payscore.md §5) [decided]: both Pay Score notifications go to the
// notify_url given at create; the debit's notify_url is set to the same URL
// (Config.NotifyURL). They are told apart by their fields.

// classify decides what a verified notification says.
func classify(n *Notification) NotificationKind {
	switch {
	case n.State == StateDoing && n.StateDescription == StateDescUserConfirm:
		return KindUserConfirmed
	case n.TransStat == TransSucceeded && n.OutOrderNo != "":
		return KindPaymentSucceeded
	default:
		return KindUnknown
	}
}

// AckPrefix + req_seq_id is the exact acknowledgement body Huifu expects.
const AckPrefix = "RECV_ORD_ID_"
