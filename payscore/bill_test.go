package payscore_test

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
	"golang.org/x/text/encoding/simplifiedchinese"
)

// want is the (kind, req_seq_id, hf_seq_id, amount, status) of a parsed line.
type want struct {
	kind   payscore.BillKind
	req    string
	hf     string
	amount money.Fen
	status string
}

func gbk(t *testing.T, s string) []byte {
	b, err := simplifiedchinese.GBK.NewEncoder().Bytes([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func zipped(t *testing.T, files map[string][]byte) []byte {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for name, data := range files {
		f, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gzipped(t *testing.T, data []byte) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	zw.Close()
	return b.Bytes()
}

const chineseBill = "交易日期,请求流水号,汇付全局流水号,交易类型,交易金额(元),交易状态\n" +
	"20261203,DB0001S1,HF1,支付分扣款,12.30,交易成功\n" +
	"20261203,RF0001S1,HF2,退款,1.00,退款成功\n"

// TestParseBillVariants feeds the parser every shape of trade bill we know
// of: encodings, separators, wrappers, units, summaries, column names in
// Chinese and in Huifu's field names, refunds told apart by type, sign or
// original transaction, statuses in words and codes.
func TestParseBillVariants(t *testing.T) {
	base := []want{{payscore.BillDebit, "DB0001S1", "HF1", 1230, "S"}, {payscore.BillRefund, "RF0001S1", "HF2", 100, "S"}}
	cases := []struct {
		name    string
		data    func(t *testing.T) []byte
		want    []want
		summary int
	}{
		{"utf8 chinese header", func(*testing.T) []byte { return []byte(chineseBill) }, base, -1},
		{"utf8 with BOM and CRLF", func(*testing.T) []byte {
			return []byte("\ufeff" + strings.ReplaceAll(chineseBill, "\n", "\r\n"))
		}, base, -1},
		{"gbk", func(t *testing.T) []byte { return gbk(t, chineseBill) }, base, -1},
		{"zip of gbk csv", func(t *testing.T) []byte {
			return zipped(t, map[string][]byte{"20261204_666_order.csv": gbk(t, chineseBill), "readme.xlsx": []byte("not a bill")})
		}, base, -1},
		{"gzip", func(t *testing.T) []byte { return gzipped(t, []byte(chineseBill)) }, base, -1},
		{"field names, tab separated, fen amounts, status codes", func(*testing.T) []byte {
			return []byte("req_date\treq_seq_id\thf_seq_id\ttrans_type\ttrans_amt_fen\ttrans_stat\n" +
				"20261203\tDB0001S1\tHF1\tPAYSCOREPAY\t1230\tS\n20261203\tRF0001S1\tHF2\tREFUND\t100\tS\n")
		}, base, -1},
		{"pipe separated, fen unit in the header", func(*testing.T) []byte {
			return []byte("请求流水号|汇付全局流水号|交易类型|交易金额（分）|交易状态\nDB0001S1|HF1|消费|1230|成功\nRF0001S1|HF2|退款|100|成功\n")
		}, base, -1},
		{"backtick and excel guards, title and summary sections", func(*testing.T) []byte {
			return []byte("交易明细对账单,商户号:6666\n\n" +
				"交易时间,请求流水号,汇付全局流水号,交易类型,交易金额,手续费,交易状态\n" +
				"`2026-12-03 10:00:00,`DB0001S1,=\"HF1\",支付,\"1,2.30\",0.07,交易成功\n" +
				"`2026-12-03 11:00:00,`RF0001S1,=\"HF2\",退款,¥1.00,0.00,退款成功\n" +
				"汇总\n总交易笔数,总交易金额\n2,13.30\n")
		}, []want{{payscore.BillDebit, "DB0001S1", "HF1", 1230, "S"}, {payscore.BillRefund, "RF0001S1", "HF2", 100, "S"}}, 2},
		{"refund by negative amount, no type column, no status column", func(*testing.T) []byte {
			return []byte("req_seq_id,hf_seq_id,ord_amt\nDB0001S1,HF1,12.3\nRF0001S1,HF2,-1\n")
		}, base, -1},
		{"refund by original transaction, refund amount column", func(*testing.T) []byte {
			return []byte("请求流水号,全局流水号,原交易全局流水号,订单金额,退款金额,状态\nDB0001S1,HF1,,12.300,,S\nRF0001S1,HF2,HF1,12.30,1.00,S\n")
		}, base, -1},
		{"failed and processing lines", func(*testing.T) []byte {
			return []byte("请求流水号,汇付全局流水号,交易金额,交易状态\nDB0001S1,HF1,12.30,交易失败\nDB0002S1,HF3,5,处理中\nDB0003S1,HF4,5,WEIRD\n")
		}, []want{{payscore.BillDebit, "DB0001S1", "HF1", 1230, "F"}, {payscore.BillDebit, "DB0002S1", "HF3", 500, "P"},
			{payscore.BillDebit, "DB0003S1", "HF4", 500, "WEIRD"}}, -1},
		{"only hf_seq_id", func(*testing.T) []byte {
			return []byte("汇付全局流水号,交易金额\nHF1,12.30\n")
		}, []want{{payscore.BillDebit, "", "HF1", 1230, "S"}}, -1},
		{"header without lines", func(*testing.T) []byte { return []byte("请求流水号,交易金额\n") }, nil, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := payscore.ParseBill(c.data(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Problems) != 0 {
				t.Fatalf("problems: %v", p.Problems)
			}
			if len(p.Lines) != len(c.want) {
				t.Fatalf("lines %+v, want %d", p.Lines, len(c.want))
			}
			for i, w := range c.want {
				l := p.Lines[i]
				got := want{l.Kind, l.ReqSeqID, l.HfSeqID, l.Amount, l.Status}
				if got != w {
					t.Errorf("line %d: %+v, want %+v", i, got, w)
				}
			}
			if p.SummaryCount != c.summary {
				t.Errorf("summary count %d, want %d", p.SummaryCount, c.summary)
			}
		})
	}
}

// TestParseBillProblems: what cannot be read is reported with its line,
// never dropped; a file without a recognisable header is an error.
func TestParseBillProblems(t *testing.T) {
	p, err := payscore.ParseBill([]byte("请求流水号,汇付全局流水号,交易金额\nDB1,HF1,12.345\n,,1.00\nDB3,HF3,abc\nDB4,HF4,1.00\n合计\n总笔数,9\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Lines) != 1 || p.Lines[0].HfSeqID != "HF4" {
		t.Fatalf("lines %+v", p.Lines)
	}
	var lines []int
	for _, pr := range p.Problems {
		lines = append(lines, pr.Line)
	}
	if len(p.Problems) != 4 || lines[0] != 2 || lines[1] != 3 || lines[2] != 4 || !strings.Contains(p.Problems[3].Reason, "summary counts 9") {
		t.Fatalf("problems %v", p.Problems)
	}
	for _, bad := range []string{"", "hello,world\n1,2\n", "PK\x03\x04garbage"} {
		if _, err := payscore.ParseBill([]byte(bad)); !errors.Is(err, payscore.ErrBillFormat) {
			t.Errorf("%q: err = %v, want ErrBillFormat", bad, err)
		}
	}
}

// TestTradeBillFromSandbox fetches a day's bill over the signed query and
// the download, with a debit and a refund in it, then the sandbox's edits.
func TestTradeBillFromSandbox(t *testing.T) {
	e := newEnv(t)
	const session = "01jbz3k5q8r9t2v4w6x8y0a2bill"
	no := e.completed(t, session, 1234)
	reg := e.register(t, session, 1, no)
	debit, err := e.client.Debit(bg, e.debitReq(session, 1, reg))
	if err != nil {
		t.Fatal(err)
	}
	e.waitNotification(t, payscore.KindPaymentSucceeded, no, 1)
	rf, err := e.client.Refund(bg, payscore.RefundRequest{ReqSeqID: payscore.ReqSeqID(session, payscore.StepRefund, 1, payscore.FormatDate(e.clock.Now())),
		ReqDate: e.clock.Now(), Amount: 234, OrgReqDate: debit.ReqDate, OrgHfSeqID: debit.HfSeqID})
	if err != nil {
		t.Fatal(err)
	}
	day := e.clock.Now()
	debitSeq := e.debitReq(session, 1, reg).ReqSeqID
	e.clock.Advance(24 * time.Hour) // the bill of a day is asked for the next day (a req_date of today)
	bill, err := e.client.TradeBill(bg, payscore.BillRequest{Day: day, Now: e.clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if len(bill.Problems) != 0 || len(bill.Lines) != 2 || len(bill.Files) != 1 {
		t.Fatalf("bill %+v", bill)
	}
	byHf := map[string]payscore.BillLine{}
	for _, l := range bill.Lines {
		byHf[l.HfSeqID] = l
	}
	if d := byHf[debit.HfSeqID]; d.Kind != payscore.BillDebit || d.Amount != 1234 || d.ReqSeqID != debitSeq || d.Status != "S" {
		t.Fatalf("debit line %+v", d)
	}
	if r := byHf[rf.HfSeqID]; r.Kind != payscore.BillRefund || r.Amount != 234 || r.Status != "S" {
		t.Fatalf("refund line %+v", r)
	}

	// The next day has no transactions: a bill without lines.
	next := day.Add(24 * time.Hour)
	e.clock.Advance(24 * time.Hour)
	empty, err := e.client.TradeBill(bg, payscore.BillRequest{Day: next, Now: e.clock.Now()})
	if err != nil || len(empty.Lines) != 0 {
		t.Fatalf("empty day: %+v %v", empty, err)
	}

	// Edits: drop the refund, alter the debit, add a stranger.
	d := payscore.FormatDate(day)
	for _, ed := range []sandbox.BillEdit{
		{Date: d, Op: sandbox.BillDrop, Match: rf.HfSeqID},
		{Date: d, Op: sandbox.BillAlter, Match: debit.HfSeqID, Line: sandbox.BillLine{Amount: 1200}},
		{Date: d, Op: sandbox.BillAdd, Line: sandbox.BillLine{ReqSeqID: "XX1", HfSeqID: "HFX", Amount: 5}},
	} {
		if err := e.sb.EditBill(ed); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.sb.EditBill(sandbox.BillEdit{Date: d, Op: "burn"}); err == nil {
		t.Fatal("unknown op accepted")
	}
	edited, err := e.client.TradeBill(bg, payscore.BillRequest{Day: day, Now: e.clock.Now()})
	if err != nil || len(edited.Lines) != 2 || edited.Lines[0].Amount != 1200 || edited.Lines[1].HfSeqID != "HFX" {
		t.Fatalf("edited bill %+v %v", edited, err)
	}

	// A bill not generated yet.
	e.sb.HoldBills(true)
	e.clock.Advance(time.Second) // a new query (the same req_seq_id would be answered as before)
	if _, err := e.client.TradeBill(bg, payscore.BillRequest{Day: day, Now: e.clock.Now()}); !errors.Is(err, payscore.ErrBillNotReady) {
		t.Fatalf("held: err = %v, want ErrBillNotReady", err)
	}
}

// FuzzParseBill: whatever a file holds, the parser answers lines, problems
// or an error — never a panic — and every line it returns has a serial.
func FuzzParseBill(f *testing.F) {
	f.Add([]byte(chineseBill))
	f.Add([]byte("req_seq_id\thf_seq_id\ttrans_amt_fen\nA\tB\t1\n"))
	f.Add([]byte("请求流水号|交易金额\n`x|=\"1.00\"\n合计\n总笔数,1\n"))
	f.Add([]byte("PK\x03\x04"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := payscore.ParseBill(b)
		if err != nil {
			return
		}
		for _, l := range p.Lines {
			if l.ReqSeqID == "" && l.HfSeqID == "" {
				t.Fatalf("a line without serial: %+v", l)
			}
			if l.Amount < 0 {
				t.Fatalf("a negative amount: %+v", l)
			}
		}
	})
}
