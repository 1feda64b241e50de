package payscore

// The trade bill (交易结算对账单查询, docs/payscore.md §11): one signed query
// names the day's files, each file is then downloaded from its
// download_url (plain HTTPS, no signature) and parsed by ParseBill.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// PathTradeBill is the bill query [sdk].
const PathTradeBill = "/v2/trade/check/filequery"

// BillTypeTrade is the daily trade bill's bill_type [sdk].
const BillTypeTrade = "TRADE_BILL"

// ErrBillNotReady: Huifu has not produced the day's bill yet (its task is
// not done); ask again later.
var ErrBillNotReady = errors.New("trade bill not ready")

// BillRequest asks for the trade bill of one Beijing day.
type BillRequest struct {
	Day time.Time // the trade day (its Beijing date counts)
	Now time.Time // the moment of the call: its req_date
	// ReqSeqID is the query's serial; default "CK" + the day + the call's time.
	ReqSeqID string
}

// BillFile is one file the query named.
type BillFile struct {
	FileID      string `json:"file_id,omitempty"`
	FileName    string `json:"file_name,omitempty"`
	BillType    string `json:"bill_type,omitempty"`
	FileDate    string `json:"file_date,omitempty"`
	DataDate    string `json:"data_date,omitempty"`
	DownloadURL string `json:"download_url,omitempty"`
	TaskStat    string `json:"task_stat,omitempty"`
}

// Bill is a day's trade bill, read.
type Bill struct {
	Day      string // yyyyMMdd, Beijing
	Files    []BillFile
	Lines    []BillLine
	Problems []BillProblem
}

// BillFileDate is the file_date that names day's bill: the bill of a trade
// day is generated, and filed, on the next day [sdk docs].
func BillFileDate(day time.Time) string { return FormatDate(day.In(Beijing).AddDate(0, 0, 1)) }

// TradeBill fetches and parses the trade bill of r.Day. ErrBillNotReady
// when Huifu's task has not finished; a *Error for a refused or failed
// query; a download or format error names the file. A day without any
// transaction is a Bill without lines.
func (c *Client) TradeBill(ctx context.Context, r BillRequest) (*Bill, error) {
	files, err := c.QueryBillFiles(ctx, r)
	if err != nil {
		return nil, err
	}
	bill := &Bill{Day: FormatDate(r.Day), Files: files}
	for _, f := range files {
		if f.DownloadURL == "" {
			continue
		}
		data, err := c.download(ctx, f.DownloadURL)
		if err != nil {
			return nil, fmt.Errorf("trade bill %s: %w", firstNonEmpty(f.FileName, f.FileID), err)
		}
		p, err := ParseBill(data)
		if err != nil {
			return nil, fmt.Errorf("trade bill %s: %w", firstNonEmpty(f.FileName, f.FileID), err)
		}
		for i := range p.Lines {
			p.Lines[i].File = firstNonEmpty(p.Lines[i].File, f.FileName)
		}
		for i := range p.Problems {
			p.Problems[i].File = firstNonEmpty(p.Problems[i].File, f.FileName)
		}
		bill.Lines = append(bill.Lines, p.Lines...)
		bill.Problems = append(bill.Problems, p.Problems...)
	}
	return bill, nil
}

// QueryBillFiles asks which trade-bill files exist for r.Day. It returns the
// files ready for download; ErrBillNotReady when none is and the task
// Huifu reports has not succeeded (a succeeded task without a file is a
// day without transactions: no files, no error).
func (c *Client) QueryBillFiles(ctx context.Context, r BillRequest) ([]BillFile, error) {
	if r.Day.IsZero() || r.Now.IsZero() {
		return nil, fmt.Errorf("%w: bill query needs the day and the time of the call", ErrInvalidRequest)
	}
	day := FormatDate(r.Day)
	seq := firstNonEmpty(r.ReqSeqID, "CK"+day+r.Now.In(Beijing).Format("150405")+fmt.Sprintf("%03d", r.Now.Nanosecond()/1e6))
	data := map[string]string{"req_date": FormatDate(r.Now), "req_seq_id": seq, "huifu_id": c.cfg.HuifuID,
		"file_date": BillFileDate(r.Day), "bill_type": BillTypeTrade}
	var raw wireFields
	if err := c.Call(ctx, PathTradeBill, data, &raw); err != nil {
		return nil, err
	}
	fileObjs, err := objectList(raw["file_details"])
	if err != nil {
		return nil, unreadable(PathTradeBill, fmt.Errorf("file_details: %w", err))
	}
	taskObjs, err := objectList(raw["task_details"])
	if err != nil {
		return nil, unreadable(PathTradeBill, fmt.Errorf("task_details: %w", err))
	}
	var files []BillFile
	for _, o := range append(fileObjs, taskObjs...) {
		f := BillFile{FileID: o.str("file_id"), FileName: firstNonEmpty(o.str("file_name"), o.str("filename")),
			BillType: firstNonEmpty(o.str("bill_type"), o.str("file_type")), FileDate: o.str("file_date"),
			DataDate: o.str("data_date"), DownloadURL: o.str("download_url"), TaskStat: o.str("task_stat")}
		if !tradeBillFile(f) || f.DownloadURL == "" || (f.TaskStat != "" && f.TaskStat != TransSucceeded) {
			continue
		}
		if f.DataDate != "" && f.DataDate != day {
			continue
		}
		if !containsFile(files, f) {
			files = append(files, f)
		}
	}
	if len(files) > 0 {
		return files, nil
	}
	for _, o := range taskObjs {
		f := BillFile{BillType: firstNonEmpty(o.str("bill_type"), o.str("file_type")), TaskStat: o.str("task_stat")}
		if tradeBillFile(f) && f.TaskStat == TransSucceeded {
			return nil, nil // done, and nothing to download: no transactions that day
		}
	}
	return nil, fmt.Errorf("%w: no file for %s yet", ErrBillNotReady, day)
}

// tradeBillFile: the trade bill, or a file that does not say its type.
// The older file_type_query codes name the daily trade data "2".
func tradeBillFile(f BillFile) bool {
	t := strings.ToUpper(f.BillType)
	return t == "" || t == BillTypeTrade || t == "2"
}

func containsFile(fs []BillFile, f BillFile) bool {
	for _, g := range fs {
		if g.DownloadURL == f.DownloadURL {
			return true
		}
	}
	return false
}

// objectList reads a field that may be an array of objects, one object,
// or either of those as a JSON string (the tolerance of docs/payscore.md
// §3). Absent, null or "" is an empty list. Keys are matched in lower case
// (Huifu's examples spell file_Name).
func objectList(raw json.RawMessage) ([]wireFields, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		if strings.TrimSpace(s) == "" {
			return nil, nil
		}
		raw = json.RawMessage(s)
	}
	var list []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		var one map[string]json.RawMessage
		if err2 := json.Unmarshal(raw, &one); err2 != nil {
			return nil, fmt.Errorf("neither an array nor an object: %v", err)
		}
		list = append(list, one)
	}
	out := make([]wireFields, 0, len(list))
	for _, m := range list {
		f := wireFields{}
		for k, v := range m {
			f[strings.ToLower(k)] = v
		}
		out = append(out, f)
	}
	return out, nil
}

// download GETs a bill file. Huifu's links are short-lived: a non-2xx
// answer is an error naming the status.
func (c *Client) download(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 6*c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("download: HTTP %d", resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBillBytes+1))
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	if len(b) > maxBillBytes {
		return nil, fmt.Errorf("download: bill larger than %d bytes", maxBillBytes)
	}
	return b, nil
}
