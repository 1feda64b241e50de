package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/chargeflow/chargeflow/payscore"
)

// unknownCode is a resp_code the profile does not know (FaultUnknownCode).
const unknownCode = "31000001"

// maxRequestBody caps a request read into memory.
const maxRequestBody = 1 << 20

func (s *Sandbox) routes() *http.ServeMux {
	mux := http.NewServeMux()
	for path, op := range operations {
		mux.HandleFunc("POST "+path, s.api(path, op))
	}
	mux.HandleFunc("GET /_sandbox/keys", s.handleKeys)
	mux.HandleFunc("GET /_sandbox/orders", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.Orders()) })
	mux.HandleFunc("GET /_sandbox/orders/{no}", s.handleOrder)
	mux.HandleFunc("POST /_sandbox/orders/{no}/confirm", s.userAction(s.Confirm))
	mux.HandleFunc("POST /_sandbox/orders/{no}/refuse", s.userAction(s.Refuse))
	mux.HandleFunc("POST /_sandbox/orders/{no}/pay", s.userAction(s.PayByUser))
	mux.HandleFunc("GET /_sandbox/ledger", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.Ledger()) })
	mux.HandleFunc("GET /_sandbox/notifications", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.Deliveries()) })
	mux.HandleFunc("POST /_sandbox/faults/debits", s.handleFailDebits)
	mux.HandleFunc("POST /_sandbox/faults/next", s.handleFailNext)
	mux.HandleFunc("POST /_sandbox/faults/notifications", s.handleNotificationFaults)
	mux.HandleFunc("POST /_sandbox/auto-confirm", s.handleAutoConfirm)
	s.billRoutes(mux)
	mux.HandleFunc("POST /_sandbox/reply-style", s.handleReplyStyle)
	return mux
}

// api is one Huifu endpoint: faults, then verify, dedupe, execute, sign.
func (s *Sandbox) api(path string, op func(*Sandbox, map[string]string) (reply, []note)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fault := s.popFault(path)
		switch fault {
		case Fault5xx:
			http.Error(w, "service unavailable", http.StatusServiceUnavailable)
			return
		case FaultTimeout:
			s.hang(r)
			return
		case FaultSystemError:
			s.writeReply(w, fail(payscore.CodeSystemError, payscore.WeChatSystemError, "系统异常"), "")
			return
		case FaultRefuse:
			s.writeReply(w, fail(payscore.CodeRisk, "RULE_LIMIT", "风控拒绝"), "")
			return
		case FaultChannelBusy:
			s.writeReply(w, fail(payscore.CodeChannelBusy, "", "通道异常，请稍后重试"), "")
			return
		}
		rep := s.execute(path, op, r)
		switch fault {
		case FaultExecuted5xx:
			http.Error(w, "bad gateway", http.StatusBadGateway)
		case FaultLostReply:
			s.hang(r)
		case FaultUnknownCode:
			s.writeReply(w, fail(unknownCode, "", "未知应答"), "")
		default:
			s.writeReply(w, s.styled(path, rep), fault)
		}
	}
}

func (s *Sandbox) popFault(path string) FaultKind {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.faults[path]
	if len(q) == 0 {
		return ""
	}
	s.faults[path] = q[1:]
	return q[0]
}

// hang holds the request until the client gives up or the sandbox closes.
func (s *Sandbox) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-s.ctx.Done():
	}
}

// execute checks the request as Huifu does and runs op. Verification runs
// over the CANONICAL form of whatever data arrived (keys sorted, compact,
// unescaped), so SDKs that keep "" values and SDKs that drop them both
// verify; "" values then count as absent.
func (s *Sandbox) execute(path string, op func(*Sandbox, map[string]string) (reply, []note), r *http.Request) reply {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err != nil || len(body) > maxRequestBody {
		return paramError("请求报文过大或读取失败")
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(body, &env); err != nil {
		return paramError("请求报文不是JSON")
	}
	for k := range env {
		switch k {
		case "sys_id", "product_id", "data", "sign":
		default:
			return paramError("未知的报文字段 " + k)
		}
	}
	var sysID, productID, sign string
	if json.Unmarshal(env["sys_id"], &sysID) != nil || json.Unmarshal(env["product_id"], &productID) != nil ||
		json.Unmarshal(env["sign"], &sign) != nil || sysID == "" || productID == "" || sign == "" {
		return paramError("sys_id/product_id/sign 必填")
	}
	canon, err := payscore.Canonicalize(env["data"])
	if err != nil {
		return paramError("data 必须是JSON对象")
	}
	if err := s.verifier.Verify(canon, sign); err != nil {
		return paramError("验签失败")
	}
	s.mu.Lock()
	inspect := s.inspect
	s.mu.Unlock()
	if inspect != nil {
		inspect(path, canon)
	}
	var raw map[string]any
	_ = json.Unmarshal(canon, &raw)
	d := make(map[string]string, len(raw))
	for k, v := range raw {
		str, isString := v.(string)
		if !isString {
			return paramError("data." + k + " 必须是字符串")
		}
		if str != "" {
			d[k] = str
		}
	}
	if (s.opts.SysID != "" && sysID != s.opts.SysID) || (s.opts.ProductID != "" && productID != s.opts.ProductID) ||
		(s.opts.HuifuID != "" && d["huifu_id"] != "" && d["huifu_id"] != s.opts.HuifuID) {
		return fail(payscore.CodeMerchantConfig, "", "商户配置错误")
	}
	if r := s.checkReqDate(d); r != nil {
		return r
	}
	// Canonical data without the empty values is the request's identity.
	ident, _ := payscore.CanonicalJSON(d)

	s.mu.Lock()
	defer s.mu.Unlock()
	var key string
	if d["req_seq_id"] != "" {
		key = d["huifu_id"] + "|" + d["req_date"] + "|" + d["req_seq_id"]
		if prev, dup := s.seen[key]; dup {
			if s.opts.RejectDuplicates || prev.path != path || prev.data != string(ident) {
				return fail(payscore.CodeDuplicate, "", "重复的请求流水号")
			}
			return prev.reply
		}
	}
	rep, notes := op(s, d)
	if key != "" {
		s.seen[key] = &seenRequest{path: path, data: string(ident), reply: rep}
	}
	// Durable before the reply or a notification leaves (Options.StateFile).
	if key != "" || (path != payscore.PathQueryOrder && path != payscore.PathQueryDeduction && path != payscore.PathQueryRefund) {
		s.saveLocked()
	}
	s.sendLocked(notes)
	return rep
}

// writeReply signs rep and writes {"data":…,"sign":…}; the unsigned and
// bad-signature faults break that on purpose.
func (s *Sandbox) writeReply(w http.ResponseWriter, rep any, fault FaultKind) {
	data, err := payscore.CanonicalJSON(rep)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	var b bytes.Buffer
	b.WriteString(`{"data":`)
	b.Write(data)
	if fault != FaultUnsigned {
		signed := data
		if fault == FaultBadSignature {
			signed = append(append([]byte{}, data...), ' ')
		}
		sig, err := s.signer.Sign(signed)
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		sj, _ := json.Marshal(sig)
		b.WriteString(`,"sign":`)
		b.Write(sj)
	}
	b.WriteByte('}')
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Write(b.Bytes())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	writeJSON(w, status, map[string]string{"error": detail})
}

func (s *Sandbox) handleKeys(w http.ResponseWriter, r *http.Request) {
	c := s.Credentials()
	writeJSON(w, http.StatusOK, map[string]string{
		"huifu_public_key":     s.PublicKey(),
		"merchant_public_key":  s.MerchantPublicKey(),
		"merchant_private_key": s.MerchantPrivateKey(),
		"sys_id":               c.SysID,
		"product_id":           c.ProductID,
		"huifu_id":             c.HuifuID,
		"service_id":           c.ServiceID,
	})
}

func (s *Sandbox) handleOrder(w http.ResponseWriter, r *http.Request) {
	o, found := s.Order(r.PathValue("no"))
	if !found {
		writeProblem(w, http.StatusNotFound, "no such order")
		return
	}
	writeJSON(w, http.StatusOK, o)
}

func (s *Sandbox) userAction(act func(string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		no := r.PathValue("no")
		if _, found := s.Order(no); !found {
			writeProblem(w, http.StatusNotFound, "no such order")
			return
		}
		if err := act(no); err != nil {
			writeProblem(w, http.StatusConflict, err.Error())
			return
		}
		o, _ := s.Order(no)
		writeJSON(w, http.StatusOK, o)
	}
}

func decodeControl(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf("bad body: %v", err))
		return false
	}
	return true
}

func (s *Sandbox) handleFailDebits(w http.ResponseWriter, r *http.Request) {
	var body struct {
		N int `json:"n"`
	}
	if !decodeControl(w, r, &body) {
		return
	}
	s.FailDebits(body.N)
	writeJSON(w, http.StatusOK, map[string]int{"fail_debits": body.N})
}

func (s *Sandbox) handleFailNext(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Path string    `json:"path"`
		N    int       `json:"n"`
		Kind FaultKind `json:"kind"`
	}
	if !decodeControl(w, r, &body) {
		return
	}
	if _, known := operations[body.Path]; !known {
		writeProblem(w, http.StatusBadRequest, "unknown path "+strconv.Quote(body.Path))
		return
	}
	if err := s.FailNext(body.Path, body.N, body.Kind); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Sandbox) handleNotificationFaults(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Lose      int   `json:"lose"`
		Duplicate *bool `json:"duplicate"`
	}
	if !decodeControl(w, r, &body) {
		return
	}
	s.LoseNotifications(body.Lose)
	if body.Duplicate != nil {
		s.DuplicateNotifications(*body.Duplicate)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Sandbox) handleAutoConfirm(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Delay string `json:"delay"`
	}
	if !decodeControl(w, r, &body) {
		return
	}
	d, err := time.ParseDuration(body.Delay)
	if err != nil || d < 0 {
		writeProblem(w, http.StatusBadRequest, "delay must be a Go duration like 2s (0 = off)")
		return
	}
	s.AutoConfirm(d)
	writeJSON(w, http.StatusOK, map[string]string{"delay": d.String()})
}
