package payscore

import (
	"context"
	"fmt"

	"github.com/chargeflow/chargeflow/money"
)

// RefundQuery locates one refund request (扫码交易退款查询): the refund's
// own req_date and its req_seq_id, or its hf_seq_id.
type RefundQuery struct {
	OrgReqDate  string // the refund request's req_date (yyyyMMdd)
	OrgReqSeqID string // the refund request's req_seq_id, or
	OrgHfSeqID  string // its hf_seq_id
}

// RefundStatus is what the refund query reports. TransStat is S (refunded),
// P (processing) or F (failed: no money moved).
type RefundStatus struct {
	RespCode  string
	HfSeqID   string
	TransStat string
	Amount    money.Fen // ord_amt [decided: yuan, tolerated as fen]
}

// QueryRefund reads a refund request. It is how a refund attempt that may
// have executed on an earlier day is settled before a new attempt dated
// today is sent (docs/payscore.md §3). A refund Huifu never saw answers
// 20000004 (IsOrderNotExist).
func (c *Client) QueryRefund(ctx context.Context, q RefundQuery) (*RefundStatus, error) {
	if err := need(q.OrgReqDate, "org_req_date"); err != nil {
		return nil, err
	}
	if q.OrgReqSeqID == "" && q.OrgHfSeqID == "" {
		return nil, fmt.Errorf("%w: org_req_seq_id or org_hf_seq_id", ErrInvalidRequest)
	}
	d := map[string]string{"huifu_id": c.cfg.HuifuID, "org_req_date": q.OrgReqDate}
	if q.OrgHfSeqID != "" {
		d["org_hf_seq_id"] = q.OrgHfSeqID
	} else {
		d["org_req_seq_id"] = q.OrgReqSeqID
	}
	var f wireFields
	if err := c.Call(ctx, PathQueryRefund, d, &f); err != nil {
		return nil, err
	}
	amt, err := f.amount(fieldOrdAmt, inYuan)
	if err != nil {
		return nil, unreadable(PathQueryRefund, err)
	}
	return &RefundStatus{RespCode: f.str("resp_code"), HfSeqID: f.str(fieldHfSeqID), TransStat: f.str(fieldTransStat), Amount: amt}, nil
}
