package payscore

// The trade bill's file (docs/payscore.md §11): a CSV (or several, zipped or
// gzipped) whose header names the columns. Huifu's published material names
// the endpoint and the file's packaging but not a fixed column order, and
// bills of payment institutions vary (a title and a summary section around
// the details, GBK or UTF-8, a BOM, Excel guards on every cell, yuan or fen),
// so the parser finds the columns by their header and tolerates all of that.
// Every line it cannot read is reported as a BillProblem, never dropped.

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/chargeflow/chargeflow/money"
	"golang.org/x/text/encoding/simplifiedchinese"
)

// BillKind says what a bill line is.
type BillKind string

// The kinds of bill lines we reconcile.
const (
	BillDebit  BillKind = "debit"
	BillRefund BillKind = "refund"
)

// BillLine is one transaction of the trade bill, in our terms.
type BillLine struct {
	Line       int      `json:"line"` // 1-based line in its file (after decompression)
	File       string   `json:"file,omitempty"`
	Kind       BillKind `json:"kind"`
	ReqSeqID   string   `json:"req_seq_id,omitempty"`
	HfSeqID    string   `json:"hf_seq_id,omitempty"`
	ReqDate    string   `json:"req_date,omitempty"` // yyyyMMdd when the file says
	OrgReqSeq  string   `json:"org_req_seq_id,omitempty"`
	OrgHfSeqID string   `json:"org_hf_seq_id,omitempty"`
	OutOrderNo string   `json:"out_order_no,omitempty"`
	// Amount is the transaction's amount, positive (a refund is a refund by
	// its Kind, whatever sign the file gave it).
	Amount money.Fen `json:"amount_fen"`
	Fee    money.Fen `json:"fee_fen,omitempty"`
	// Status is S, F or P (TransSucceeded, …), or the file's own word when
	// it is none of those.
	Status string `json:"status"`
	Type   string `json:"type,omitempty"` // the file's transaction type, as written
}

// BillProblem is a line of the file that could not be read.
type BillProblem struct {
	File   string `json:"file,omitempty"`
	Line   int    `json:"line"`
	Reason string `json:"reason"`
}

func (p BillProblem) String() string {
	if p.File != "" {
		return fmt.Sprintf("%s line %d: %s", p.File, p.Line, p.Reason)
	}
	return fmt.Sprintf("line %d: %s", p.Line, p.Reason)
}

// ParsedBill is what ParseBill read from a file.
type ParsedBill struct {
	Lines    []BillLine
	Problems []BillProblem
	// SummaryCount and SummaryAmount are the file's own totals when it has
	// a summary section (-1 when absent); a count that disagrees with the
	// lines read is also a problem.
	SummaryCount int
}

// ErrBillFormat is returned (wrapped) when a file has no recognisable
// header at all.
var ErrBillFormat = errors.New("unrecognised trade bill format")

// maxBillBytes caps a bill (compressed or not) read into memory.
const maxBillBytes = 256 << 20

// ParseBill reads a trade bill file: a zip of CSVs, a gzipped CSV or a
// plain CSV (GBK or UTF-8, with or without BOM; comma, tab or | separated).
func ParseBill(b []byte) (ParsedBill, error) {
	out := ParsedBill{SummaryCount: -1}
	switch {
	case bytes.HasPrefix(b, []byte("PK\x03\x04")):
		zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return out, fmt.Errorf("%w: zip: %v", ErrBillFormat, err)
		}
		found := false
		for _, f := range zr.File {
			if f.FileInfo().IsDir() || !billMember(f.Name) {
				continue
			}
			rc, err := f.Open()
			if err != nil {
				return out, fmt.Errorf("%w: zip member %s: %v", ErrBillFormat, f.Name, err)
			}
			data, err := io.ReadAll(io.LimitReader(rc, maxBillBytes))
			rc.Close()
			if err != nil {
				return out, fmt.Errorf("%w: zip member %s: %v", ErrBillFormat, f.Name, err)
			}
			p, err := parseBillText(data, path.Base(f.Name))
			if err != nil {
				return out, err
			}
			found = true
			out.Lines = append(out.Lines, p.Lines...)
			out.Problems = append(out.Problems, p.Problems...)
			if p.SummaryCount >= 0 {
				out.SummaryCount = max(out.SummaryCount, 0) + p.SummaryCount
			}
		}
		if !found {
			return out, fmt.Errorf("%w: zip holds no csv", ErrBillFormat)
		}
		return out, nil
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return out, fmt.Errorf("%w: gzip: %v", ErrBillFormat, err)
		}
		data, err := io.ReadAll(io.LimitReader(zr, maxBillBytes))
		if err != nil {
			return out, fmt.Errorf("%w: gzip: %v", ErrBillFormat, err)
		}
		return parseBillText(data, "")
	}
	return parseBillText(b, "")
}

// billMember: the zip members that are bills (csv or txt; not the xlsx of
// the settlement-fund bill, which is another bill type).
func billMember(name string) bool {
	n := strings.ToLower(name)
	return strings.HasSuffix(n, ".csv") || strings.HasSuffix(n, ".txt")
}

// decodeBillText returns b as UTF-8: without a BOM, and from GBK (GB18030)
// when b is not valid UTF-8.
func decodeBillText(b []byte) ([]byte, error) {
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	if utf8.Valid(b) {
		return b, nil
	}
	u, err := simplifiedchinese.GB18030.NewDecoder().Bytes(b)
	if err != nil {
		return nil, fmt.Errorf("%w: neither UTF-8 nor GBK: %v", ErrBillFormat, err)
	}
	return u, nil
}

// billColumn names a column we understand.
type billColumn int

const (
	colReqSeq billColumn = iota
	colHfSeq
	colReqDate
	colTime
	colAmount
	colRefundAmount
	colFee
	colStatus
	colType
	colOrgReqSeq
	colOrgHfSeq
	colOrgReqDate
	colOutOrderNo
	numBillColumns
)

// billHeaders are the header names each column is known by (normalised:
// lower case, no spaces, underscores or unit suffix). The order matters
// where one name contains another: the first match wins, the original
// ("org"/"原") names are tried before the plain ones.
var billHeaders = []struct {
	col   billColumn
	names []string
}{
	{colOrgReqSeq, []string{"orgreqseqid", "原请求流水号", "原交易请求流水号", "原商户请求流水号", "原商户流水号"}},
	{colOrgHfSeq, []string{"orghfseqid", "原全局流水号", "原交易全局流水号", "原汇付全局流水号", "原汇付流水号"}},
	{colOrgReqDate, []string{"orgreqdate", "原请求日期", "原交易日期", "原交易请求日期"}},
	{colReqSeq, []string{"reqseqid", "请求流水号", "商户请求流水号", "交易请求流水号", "商户流水号"}},
	{colHfSeq, []string{"hfseqid", "transhfseqid", "汇付全局流水号", "全局流水号", "汇付流水号", "汇付交易流水号"}},
	{colReqDate, []string{"reqdate", "transdate", "请求日期", "交易日期"}},
	{colTime, []string{"transtime", "endtime", "transfinishtime", "交易时间", "交易完成时间", "完成时间", "支付时间"}},
	{colRefundAmount, []string{"refundamt", "退款金额"}},
	{colAmount, []string{"transamt", "ordamt", "amount", "交易金额", "订单金额", "金额"}},
	{colFee, []string{"feeamt", "fee", "手续费", "手续费金额"}},
	{colStatus, []string{"transstat", "transstatus", "status", "交易状态", "订单状态", "状态"}},
	{colType, []string{"transtype", "type", "交易类型", "业务类型", "交易类别"}},
	{colOutOrderNo, []string{"outorderno", "服务订单号", "支付分订单号"}},
}

// header is a recognised header row: where each column is and whether its
// amounts are fen.
type header struct {
	at  [numBillColumns]int // index+1; 0 = absent
	fen [numBillColumns]bool
}

func (h *header) get(row []string, c billColumn) string {
	if i := h.at[c] - 1; i >= 0 && i < len(row) {
		return row[i]
	}
	return ""
}

// cleanCell strips what bills wrap cells in: spaces, a leading backtick or
// apostrophe (guards against spreadsheet number formats), a tab, and the
// ="…" form.
func cleanCell(s string) string {
	s = strings.TrimSpace(strings.TrimPrefix(s, "\ufeff"))
	if strings.HasPrefix(s, `="`) && strings.HasSuffix(s, `"`) && len(s) >= 3 {
		s = s[2 : len(s)-1]
	}
	s = strings.TrimLeft(s, "`'\t")
	return strings.TrimSpace(s)
}

// normHeader normalises a header cell and tells whether it carries a fen unit.
func normHeader(s string) (name string, fen bool) {
	s = strings.ToLower(cleanCell(s))
	for _, open := range []string{"(", "（", "["} {
		if i := strings.Index(s, open); i > 0 {
			unit := s[i:]
			fen = strings.Contains(unit, "分") || strings.Contains(unit, "fen")
			s = s[:i]
		}
	}
	if strings.HasSuffix(s, "_fen") {
		s, fen = strings.TrimSuffix(s, "_fen"), true
	} else if strings.HasSuffix(s, "_yuan") {
		s = strings.TrimSuffix(s, "_yuan")
	}
	s = strings.NewReplacer(" ", "", "_", "", "-", "", "\u3000", "").Replace(s)
	return s, fen
}

// parseHeader recognises row as the details' header: it must name an id
// column (req_seq_id or hf_seq_id) and an amount.
func parseHeader(row []string) (*header, bool) {
	h := &header{}
	for i, cell := range row {
		name, fen := normHeader(cell)
		if name == "" {
			continue
		}
		for _, k := range billHeaders {
			if h.at[k.col] != 0 {
				continue
			}
			if matchHeader(name, k.names) {
				h.at[k.col], h.fen[k.col] = i+1, fen
				break
			}
		}
	}
	ok := (h.at[colReqSeq] != 0 || h.at[colHfSeq] != 0) && (h.at[colAmount] != 0 || h.at[colRefundAmount] != 0)
	return h, ok
}

func matchHeader(name string, names []string) bool {
	for _, n := range names {
		if name == n {
			return true
		}
	}
	return false
}

// summaryMarker reports whether a row opens the summary section.
func summaryMarker(row []string) bool {
	first := ""
	for _, c := range row {
		if c = cleanCell(c); c != "" {
			first = strings.ToLower(c)
			break
		}
	}
	for _, m := range []string{"汇总", "合计", "总计", "总交易", "总笔数", "total", "summary", "#"} {
		if strings.HasPrefix(first, m) {
			return true
		}
	}
	return false
}

// detectComma picks the separator the file's busiest line uses most.
func detectComma(text []byte) rune {
	best, comma := 0, ','
	for i, line := range bytes.SplitN(text, []byte("\n"), 30) {
		if i >= 29 {
			break
		}
		for _, c := range []rune{',', '\t', '|'} {
			if n := bytes.Count(line, []byte(string(c))); n > best {
				best, comma = n, c
			}
		}
	}
	return comma
}

func parseBillText(raw []byte, file string) (ParsedBill, error) {
	out := ParsedBill{SummaryCount: -1}
	text, err := decodeBillText(raw)
	if err != nil {
		return out, err
	}
	r := csv.NewReader(bytes.NewReader(text))
	r.Comma = detectComma(text)
	r.FieldsPerRecord = -1
	r.LazyQuotes = true
	r.ReuseRecord = false
	var (
		h         *header
		inSummary bool
		sumHeader []string
	)
	for {
		row, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			line := 0
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				line = pe.Line
			}
			out.Problems = append(out.Problems, BillProblem{File: file, Line: line, Reason: err.Error()})
			continue
		}
		line, _ := r.FieldPos(0)
		if blankRow(row) {
			continue
		}
		switch {
		case inSummary:
			if c, ok := summaryCount(sumHeader, row); ok {
				out.SummaryCount = c
			}
			sumHeader = row
			continue
		case h == nil:
			if hh, ok := parseHeader(row); ok {
				h = hh
			}
			continue // a title or a summary before the details
		case summaryMarker(row):
			inSummary = true
			sumHeader = row
			if c, ok := summaryCount(nil, row); ok {
				out.SummaryCount = c
			}
			continue
		}
		l, reason := h.line(row)
		if reason != "" {
			out.Problems = append(out.Problems, BillProblem{File: file, Line: line, Reason: reason})
			continue
		}
		l.Line, l.File = line, file
		out.Lines = append(out.Lines, l)
	}
	if h == nil {
		return out, fmt.Errorf("%w: no header naming req_seq_id or hf_seq_id and an amount", ErrBillFormat)
	}
	if out.SummaryCount >= 0 && out.SummaryCount != len(out.Lines)+len(out.Problems) {
		out.Problems = append(out.Problems, BillProblem{File: file, Reason: fmt.Sprintf("the summary counts %d transactions, the details hold %d",
			out.SummaryCount, len(out.Lines)+len(out.Problems))})
	}
	return out, nil
}

func blankRow(row []string) bool {
	for _, c := range row {
		if cleanCell(c) != "" {
			return false
		}
	}
	return true
}

// summaryCount finds a transaction count in a summary: a row whose cell
// follows a header cell naming a count ("总交易笔数", "笔数", "count"), or
// "label,count" / "label：count" on one row.
func summaryCount(head, row []string) (int, bool) {
	isCount := func(s string) bool {
		s = strings.ToLower(cleanCell(s))
		return strings.Contains(s, "笔数") || strings.Contains(s, "count") || strings.Contains(s, "总交易单数")
	}
	for i, c := range head {
		if isCount(c) && i < len(row) {
			if n, err := strconv.Atoi(cleanCell(row[i])); err == nil {
				return n, true
			}
		}
	}
	for i := 0; i+1 < len(row); i++ {
		if isCount(row[i]) {
			if n, err := strconv.Atoi(cleanCell(row[i+1])); err == nil {
				return n, true
			}
		}
	}
	return 0, false
}

// line reads one detail row, or says why it cannot.
func (h *header) line(row []string) (BillLine, string) {
	get := func(c billColumn) string { return cleanCell(h.get(row, c)) }
	l := BillLine{ReqSeqID: get(colReqSeq), HfSeqID: get(colHfSeq), OrgReqSeq: get(colOrgReqSeq),
		OrgHfSeqID: get(colOrgHfSeq), OutOrderNo: get(colOutOrderNo), Type: get(colType)}
	if l.ReqSeqID == "" && l.HfSeqID == "" {
		return l, "neither req_seq_id nor hf_seq_id"
	}
	l.ReqDate = billDate(get(colReqDate))
	if l.ReqDate == "" {
		l.ReqDate = billDate(get(colTime))
	}
	amount, negative, err := parseBillAmount(get(colAmount), h.fen[colAmount])
	if err != nil {
		return l, "amount: " + err.Error()
	}
	refundAmt, refundNeg, err := parseBillAmount(get(colRefundAmount), h.fen[colRefundAmount])
	if err != nil {
		return l, "refund amount: " + err.Error()
	}
	if h.at[colAmount] == 0 && h.get(row, colRefundAmount) == "" {
		return l, "no amount"
	}
	if fee, _, err := parseBillAmount(get(colFee), h.fen[colFee]); err == nil {
		l.Fee = fee
	}
	l.Kind = billKind(l.Type, l.OrgReqSeq != "" || l.OrgHfSeqID != "", negative || refundNeg)
	l.Amount = amount
	if l.Kind == BillRefund && refundAmt > 0 {
		l.Amount = refundAmt
	}
	if l.Amount == 0 && get(colAmount) == "" && refundAmt == 0 {
		return l, "no amount"
	}
	l.Status = billStatus(get(colStatus), h.at[colStatus] != 0)
	return l, ""
}

// parseBillAmount reads an amount: yuan ("12.30", "12.3", "12", "1,234.50",
// "¥12.30", "12.300") unless the header said fen; a sign is reported apart.
// "" is 0.
func parseBillAmount(s string, fen bool) (money.Fen, bool, error) {
	s = strings.NewReplacer(",", "", "¥", "", "￥", "", " ", "", "元", "").Replace(s)
	if s == "" {
		return 0, false, nil
	}
	negative := strings.HasPrefix(s, "-")
	s = strings.TrimLeft(s, "+-")
	if fen {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return 0, false, fmt.Errorf("not integer fen: %q", s)
		}
		return money.Fen(v), negative, nil
	}
	if i := strings.IndexByte(s, '.'); i >= 0 && len(s)-i-1 > 2 {
		extra := s[i+3:]
		if strings.Trim(extra, "0") != "" {
			return 0, false, fmt.Errorf("more than two decimals: %q", s)
		}
		s = s[:i+3]
	}
	v, err := money.ParseYuan(s)
	if err != nil {
		return 0, false, err
	}
	return v, negative, nil
}

// billDate extracts yyyyMMdd from "20261203", "2026-12-03", "2026/12/03 10:00:00", "20261203100000".
func billDate(s string) string {
	var d []byte
	for i := 0; i < len(s) && len(d) < 8; i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			d = append(d, c)
		case c == '-' || c == '/' || c == '.':
		default:
			i = len(s)
		}
	}
	if len(d) != 8 {
		return ""
	}
	if _, err := ParseDate(string(d)); err != nil {
		return ""
	}
	return string(d)
}

// billKind tells a refund from a debit: by the type's words, else by an
// original transaction named, else by a negative amount.
func billKind(typ string, hasOrg, negative bool) BillKind {
	t := strings.ToUpper(typ)
	switch {
	case strings.Contains(t, "退") || strings.Contains(t, "REFUND") || t == "TK" || t == "R":
		return BillRefund
	case t != "":
		return BillDebit
	case hasOrg || negative:
		return BillRefund
	}
	return BillDebit
}

// billStatus maps a status cell to S, F or P; a bill without a status column
// lists successful transactions only.
func billStatus(s string, hasColumn bool) string {
	if !hasColumn {
		return TransSucceeded
	}
	u := strings.ToUpper(s)
	switch {
	case u == "S" || u == "SUCCESS" || u == "SUCC" || u == "1" || strings.Contains(u, "成功") || u == "已支付" || u == "已退款":
		return TransSucceeded
	case u == "F" || u == "FAIL" || u == "FAILED" || u == "FAILURE" || u == "2" || strings.Contains(u, "失败"):
		return TransFailed
	case u == "P" || u == "I" || u == "PROCESSING" || u == "0" || strings.Contains(u, "处理中"):
		return TransProcessing
	case u == "":
		return TransSucceeded
	}
	return s
}
