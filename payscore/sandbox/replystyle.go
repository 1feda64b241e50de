package sandbox

// Wire rules Huifu enforces beyond each operation (the req_date of today,
// the configured service_id), the refund query, and the styles the sandbox
// can answer queries in, so the client's tolerant reading (docs/payscore.md
// §3) is tested against each form Huifu might use.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
)

// DefaultServiceID is the service_id ClientConfig gives when
// Options.ServiceID is empty.
const DefaultServiceID = "sandbox-service"

// checkReqDate refuses a req_date that is not the sandbox's today (Beijing),
// as Huifu does: a request re-sent after midnight must be a new attempt.
func (s *Sandbox) checkReqDate(d map[string]string) reply {
	if rd := d["req_date"]; rd != "" && rd != payscore.FormatDate(s.now()) {
		return paramError("请求日期必须是当前日期")
	}
	return nil
}

// checkServiceID refuses a create whose service_id is not the configured one.
func (s *Sandbox) checkServiceID(id string) reply {
	if s.opts.ServiceID != "" && id != s.opts.ServiceID {
		return paramError("service_id 不存在或不属于该商户")
	}
	return nil
}

// queryRefund answers 扫码交易退款查询 from the request cache: a refund is
// found by its req_date and req_seq_id, or by its hf_seq_id. s.mu is held.
func (s *Sandbox) queryRefund(d map[string]string) (reply, []note) {
	if r := required(d, "huifu_id", "org_req_date"); r != nil {
		return r, nil
	}
	var found *seenRequest
	switch {
	case d["org_req_seq_id"] != "":
		found = s.seen[d["huifu_id"]+"|"+d["org_req_date"]+"|"+d["org_req_seq_id"]]
	case d["org_hf_seq_id"] != "":
		for _, sr := range s.seen {
			if sr.path == payscore.PathRefund && sr.reply["hf_seq_id"] == d["org_hf_seq_id"] {
				found = sr
				break
			}
		}
	default:
		return paramError("org_req_seq_id/org_hf_seq_id 必填其一"), nil
	}
	if found == nil || found.path != payscore.PathRefund {
		return notFound("退款记录不存在"), nil
	}
	rep := found.reply
	stat := rep["trans_stat"]
	if rep["resp_code"] != payscore.CodeSuccess {
		stat = payscore.TransFailed // refused: no money moved
	}
	return ok(map[string]string{"huifu_id": d["huifu_id"], "org_req_date": d["org_req_date"],
		"org_req_seq_id": rep["req_seq_id"], "hf_seq_id": rep["hf_seq_id"], "ord_amt": rep["ord_amt"], "trans_stat": stat}), nil
}

// ReplyStyle is how the sandbox writes the amounts and objects of its query
// replies (query order, query refund).
type ReplyStyle string

// Reply styles.
const (
	StyleDefault     ReplyStyle = ""             // fen as strings, collection as a JSON string
	StyleFenNumbers  ReplyStyle = "fen_numbers"  // fen as JSON numbers
	StyleYuanStrings ReplyStyle = "yuan_strings" // every amount a yuan string ("12.30")
	StyleObjects     ReplyStyle = "objects"      // collection as a JSON object, not a string
	StyleExtraFields ReplyStyle = "extra_fields" // unknown fields added everywhere
	StyleUnreadable  ReplyStyle = "unreadable"   // total_amount that is no amount at all
)

func (st ReplyStyle) valid() bool {
	switch st {
	case StyleDefault, StyleFenNumbers, StyleYuanStrings, StyleObjects, StyleExtraFields, StyleUnreadable:
		return true
	}
	return false
}

// SetReplyStyle makes query replies use style from now on.
func (s *Sandbox) SetReplyStyle(style ReplyStyle) error {
	if !style.valid() {
		return fmt.Errorf("sandbox: unknown reply style %q", style)
	}
	s.mu.Lock()
	s.style = style
	s.mu.Unlock()
	return nil
}

func (s *Sandbox) handleReplyStyle(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Style ReplyStyle `json:"style"`
	}
	if !decodeControl(w, r, &body) {
		return
	}
	if err := s.SetReplyStyle(body.Style); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// styled rewrites a successful query reply in the current style.
func (s *Sandbox) styled(path string, rep reply) any {
	s.mu.Lock()
	style := s.style
	s.mu.Unlock()
	if style == StyleDefault || rep["resp_code"] != payscore.CodeSuccess ||
		(path != payscore.PathQueryOrder && path != payscore.PathQueryRefund) {
		return rep
	}
	out := make(map[string]any, len(rep)+2)
	for k, v := range rep {
		out[k] = v
	}
	fen := func(v any) any { // v: a fen amount as a JSON number or a string of digits
		n, err := strconv.ParseInt(strings.TrimSpace(fmt.Sprint(v)), 10, 64)
		if err != nil {
			return v
		}
		f := money.Fen(n)
		switch style {
		case StyleFenNumbers:
			return json.Number(fmt.Sprint(int64(f)))
		case StyleYuanStrings:
			return f.Yuan()
		}
		return v
	}
	if v, has := out["total_amount"]; has {
		out["total_amount"] = fen(v)
		if style == StyleUnreadable {
			out["total_amount"] = "about twelve"
		}
	}
	if v, has := out["ord_amt"]; has && style == StyleFenNumbers {
		if y, err := money.ParseYuan(fmt.Sprint(v)); err == nil {
			out["ord_amt"] = json.Number(fmt.Sprint(int64(y))) // integer fen
		}
	}
	if raw, has := rep["collection"]; has {
		var col map[string]any
		dec := json.NewDecoder(strings.NewReader(raw))
		dec.UseNumber()
		if dec.Decode(&col) == nil {
			for _, k := range []string{"total_amount", "paying_amount", "paid_amount"} {
				if v, has := col[k]; has {
					col[k] = fen(v)
				}
			}
			if details, isList := col["details"].([]any); isList {
				for _, d := range details {
					if m, isMap := d.(map[string]any); isMap {
						m["amount"] = fen(m["amount"])
						if style == StyleYuanStrings {
							m["seq"] = fmt.Sprint(m["seq"]) // an integer as a string
						}
						if style == StyleExtraFields {
							m["promotion_detail"] = []any{}
						}
					}
				}
			}
			if style == StyleExtraFields {
				col["unknown_flag"] = true
			}
			if style == StyleObjects || style == StyleFenNumbers {
				out["collection"] = col
			} else {
				b, _ := payscore.CanonicalJSON(col)
				out["collection"] = string(b)
			}
		}
	}
	if style == StyleExtraFields {
		out["acct_split_bunch"] = map[string]any{"acct_infos": []any{}}
		out["sys_note"] = 42
	}
	return out
}

// Inspect makes fn see the data of every request whose signature verified,
// as the sandbox read it (canonical JSON), with its path; nil stops it. For
// tests that check what the client sent.
func (s *Sandbox) Inspect(fn func(path string, data []byte)) {
	s.mu.Lock()
	s.inspect = fn
	s.mu.Unlock()
}
