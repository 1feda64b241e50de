package sandbox

// The trade bill (docs/payscore.md §11): the sandbox answers the bill query
// with one zipped CSV of its own ledger for the day — every payment
// (payscorepay debits and users' own payments) and every refund, by
// req_seq_id / hf_seq_id, amount and status — served at
// /_sandbox/bills/{yyyyMMdd}. Tests make Huifu's books disagree with
// chargeflow's by editing the bill (drop, add or alter a line: EditBill,
// POST /_sandbox/bills/edits), and hold it back (HoldBills) to play a bill
// not generated yet. Edits and the hold live in memory only.

import (
	"archive/zip"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
)

// refundLine is a refund the sandbox made, kept with its payment.
type refundLine struct {
	ReqSeqID string    `json:"req_seq_id"`
	ReqDate  string    `json:"req_date"`
	HfSeqID  string    `json:"hf_seq_id"`
	Amount   money.Fen `json:"amount_fen"`
}

// BillLine is one line of the sandbox's bill, for EditBill.
type BillLine struct {
	Kind     payscore.BillKind `json:"kind,omitempty"` // debit (default) or refund
	ReqSeqID string            `json:"req_seq_id,omitempty"`
	HfSeqID  string            `json:"hf_seq_id,omitempty"`
	ReqDate  string            `json:"req_date,omitempty"`
	Amount   money.Fen         `json:"amount_fen,omitempty"`
	Status   string            `json:"status,omitempty"` // S (default), F, P
	// OrgHfSeqID names a refund's payment.
	OrgHfSeqID string `json:"org_hf_seq_id,omitempty"`
}

// Bill edit operations.
const (
	BillDrop  = "drop"  // remove the line whose req_seq_id or hf_seq_id is Match
	BillAdd   = "add"   // add Line
	BillAlter = "alter" // change the matched line: Line's non-zero fields replace its own
)

// BillEdit changes the bill of Date (yyyyMMdd) as served from now on.
type BillEdit struct {
	Date  string   `json:"date"`
	Op    string   `json:"op"`
	Match string   `json:"match,omitempty"`
	Line  BillLine `json:"line,omitzero"`
}

// EditBill records an edit of a day's bill. It fails for an unknown
// operation, a bad date, or a drop/alter without Match.
func (s *Sandbox) EditBill(e BillEdit) error {
	if _, err := payscore.ParseDate(e.Date); err != nil {
		return fmt.Errorf("sandbox: bill edit: date %q is not yyyyMMdd", e.Date)
	}
	switch e.Op {
	case BillAdd:
		if e.Line.ReqSeqID == "" && e.Line.HfSeqID == "" {
			return fmt.Errorf("sandbox: bill edit: an added line needs req_seq_id or hf_seq_id")
		}
	case BillDrop, BillAlter:
		if e.Match == "" {
			return fmt.Errorf("sandbox: bill edit: %s needs match", e.Op)
		}
	default:
		return fmt.Errorf("sandbox: bill edit: unknown op %q (drop, add, alter)", e.Op)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.billEdits == nil {
		s.billEdits = map[string][]BillEdit{}
	}
	s.billEdits[e.Date] = append(s.billEdits[e.Date], e)
	return nil
}

// HoldBills makes the bill query answer "not generated yet" (on) or serve
// the bills again (off).
func (s *Sandbox) HoldBills(on bool) {
	s.mu.Lock()
	s.billsHeld = on
	s.mu.Unlock()
}

// BillLines returns the lines of day's bill (yyyyMMdd) as the sandbox serves
// it, edits included, ordered by hf_seq_id.
func (s *Sandbox) BillLines(day string) []BillLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.billLinesLocked(day)
}

func (s *Sandbox) billLinesLocked(day string) []BillLine {
	var lines []BillLine
	for _, o := range s.orders {
		for _, p := range o.payments {
			if p.ReqDate == day {
				lines = append(lines, BillLine{Kind: payscore.BillDebit, ReqSeqID: p.ReqSeqID, HfSeqID: p.HfSeqID,
					ReqDate: p.ReqDate, Amount: p.Amount, Status: payscore.TransSucceeded})
			}
			for _, r := range p.refunds {
				if r.ReqDate == day {
					lines = append(lines, BillLine{Kind: payscore.BillRefund, ReqSeqID: r.ReqSeqID, HfSeqID: r.HfSeqID,
						ReqDate: r.ReqDate, Amount: r.Amount, Status: payscore.TransSucceeded, OrgHfSeqID: p.HfSeqID})
				}
			}
		}
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].HfSeqID+lines[i].ReqSeqID < lines[j].HfSeqID+lines[j].ReqSeqID })
	for _, e := range s.billEdits[day] {
		matches := func(l BillLine) bool { return l.ReqSeqID == e.Match || l.HfSeqID == e.Match }
		switch e.Op {
		case BillAdd:
			l := e.Line
			l.ReqDate = firstNonEmpty(l.ReqDate, day)
			lines = append(lines, l)
		case BillDrop:
			kept := lines[:0]
			for _, l := range lines {
				if !matches(l) {
					kept = append(kept, l)
				}
			}
			lines = kept
		case BillAlter:
			for i, l := range lines {
				if !matches(l) {
					continue
				}
				if e.Line.Amount != 0 {
					l.Amount = e.Line.Amount
				}
				if e.Line.Status != "" {
					l.Status = e.Line.Status
				}
				if e.Line.Kind != "" {
					l.Kind = e.Line.Kind
				}
				lines[i] = l
			}
		}
	}
	return lines
}

// billRoutes adds the bill query and the bill files to mux.
func (s *Sandbox) billRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+payscore.PathTradeBill, func(w http.ResponseWriter, r *http.Request) {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base := scheme + "://" + r.Host
		s.api(payscore.PathTradeBill, func(s *Sandbox, d map[string]string) (reply, []note) { return s.billQuery(d, base) })(w, r)
	})
	mux.HandleFunc("GET /_sandbox/bills/{day}", s.handleBillFile)
	mux.HandleFunc("GET /_sandbox/bills/{day}/lines", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.BillLines(r.PathValue("day")))
	})
	mux.HandleFunc("POST /_sandbox/bills/edits", func(w http.ResponseWriter, r *http.Request) {
		var e BillEdit
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody)).Decode(&e); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body: " + err.Error()})
			return
		}
		if err := s.EditBill(e); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("POST /_sandbox/bills/hold", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			On bool `json:"on"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody)).Decode(&body); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body: " + err.Error()})
			return
		}
		s.HoldBills(body.On)
		writeJSON(w, http.StatusOK, map[string]bool{"on": body.On})
	})
}

// billQuery answers the bill query (s.mu held): the trade bill of the day
// before file_date, ready at once unless HoldBills.
func (s *Sandbox) billQuery(d map[string]string, base string) (reply, []note) {
	if r := required(d, "req_date", "req_seq_id", "huifu_id", "file_date"); r != nil {
		return r, nil
	}
	if !validDate(d["req_date"]) || !validDate(d["file_date"]) {
		return paramError("req_date/file_date 格式错误"), nil
	}
	if t := firstNonEmpty(d["bill_type"], payscore.BillTypeTrade); t != payscore.BillTypeTrade {
		return paramError("不支持的 bill_type " + t), nil
	}
	fd, _ := payscore.ParseDate(d["file_date"])
	day := payscore.FormatDate(fd.AddDate(0, 0, -1))
	name := d["file_date"] + "_" + d["huifu_id"] + "_order.zip"
	task := map[string]string{"huifu_id": d["huifu_id"], "data_date": day, "file_name": name,
		"bill_type": payscore.BillTypeTrade, "task_stat": payscore.TransSucceeded}
	rep := ok(map[string]string{"req_date": d["req_date"], "req_seq_id": d["req_seq_id"]})
	if s.billsHeld {
		task["task_stat"] = payscore.TransProcessing
		tj, _ := json.Marshal([]map[string]string{task})
		rep["task_details"] = string(tj)
		return rep, nil
	}
	file := map[string]string{"huifu_id": d["huifu_id"], "file_date": d["file_date"], "file_id": "BILL" + day,
		"file_Name": name, "bill_type": payscore.BillTypeTrade, "download_url": base + "/_sandbox/bills/" + day}
	task["download_url"], task["file_id"] = file["download_url"], file["file_id"]
	fj, _ := json.Marshal([]map[string]string{file})
	tj, _ := json.Marshal([]map[string]string{task})
	// The reply's data is a flat object of strings: the lists travel as
	// JSON strings, which the client reads as tolerantly as arrays.
	rep["file_details"], rep["task_details"] = string(fj), string(tj)
	return rep, nil
}

func (s *Sandbox) handleBillFile(w http.ResponseWriter, r *http.Request) {
	day := r.PathValue("day")
	if !validDate(day) {
		http.Error(w, "bad day", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	held := s.billsHeld
	lines := s.billLinesLocked(day)
	s.mu.Unlock()
	if held {
		http.Error(w, "bill not generated yet", http.StatusNotFound)
		return
	}
	b, err := BillFile(day, lines)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", `attachment; filename="`+day+`_order.zip"`)
	w.Write(b)
}

// BillFile renders lines as the sandbox's bill: a zip holding one UTF-8
// CSV (with BOM) that has a title line, a header, the details with every
// cell guarded by a backtick, and a summary section — the shapes
// payscore.ParseBill must read.
func BillFile(day string, lines []BillLine) ([]byte, error) {
	var csvBuf bytes.Buffer
	csvBuf.WriteString("\ufeff")
	cw := csv.NewWriter(&csvBuf)
	cw.Write([]string{"交易明细对账单", "日期:" + day})
	cw.Write([]string{"交易日期", "交易时间", "请求流水号", "汇付全局流水号", "原交易全局流水号", "交易类型", "交易金额(元)", "手续费(元)", "交易状态"})
	var total money.Fen
	for _, l := range lines {
		typ := "支付分扣款"
		if l.Kind == payscore.BillRefund {
			typ = "退款"
		}
		total += l.Amount
		date := firstNonEmpty(l.ReqDate, day)
		cw.Write([]string{"`" + date, "`" + date + "120000", "`" + l.ReqSeqID, "`" + l.HfSeqID, "`" + l.OrgHfSeqID, typ,
			l.Amount.Yuan(), "0.00", billStatusWord(firstNonEmpty(l.Status, payscore.TransSucceeded))})
	}
	cw.Write([]string{"汇总"})
	cw.Write([]string{"总交易笔数", "总交易金额(元)"})
	cw.Write([]string{strconv.Itoa(len(lines)), total.Yuan()})
	cw.Flush()
	if err := cw.Error(); err != nil {
		return nil, err
	}
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	f, err := zw.Create(day + "_order.csv")
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(csvBuf.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return zb.Bytes(), nil
}

func billStatusWord(st string) string {
	switch strings.ToUpper(st) {
	case payscore.TransSucceeded:
		return "交易成功"
	case payscore.TransFailed:
		return "交易失败"
	case payscore.TransProcessing:
		return "处理中"
	}
	return st
}
