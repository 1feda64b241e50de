package sandbox

// Durable state (Options.StateFile).
//
// What a restarted sandbox gets back from the file:
//   - every service order with all its fields, its deduction registrations,
//     its payments and their refunds (so the ledger counts what it counted);
//     the indexes by hf_seq_id, create req_seq_id, registration req_seq_id /
//     hf_seq_id and payment req_date/hf_seq_id are rebuilt from the orders;
//   - the seq counter, so new out_order_no / hf_seq_id / out_trade_no never
//     collide with old ones;
//   - the request replay cache, so a req_seq_id retried after the restart
//     still replays its first reply (or is refused as a duplicate);
//   - the key pairs the sandbox generated (Huifu's and the merchant's), so a
//     restarted sandbox is the same "Huifu". Keys given in Options are never
//     written and always win over the file.
//
// What is not kept: injected faults (FailNext, FailDebits,
// LoseNotifications, DuplicateNotifications), an AutoConfirm delay changed
// at run time, the delivery records and the notifications in flight (a
// client finds those facts by query), and the auto-confirm timers. When
// Options.AutoConfirm is set, orders still CREATED at load are given a fresh
// auto-confirmation after that delay, as if they had just been created.
//
// The file is rewritten after every change that matters (a Huifu request
// that creates or changes something or records a req_seq_id, Confirm,
// Refuse, PayByUser), under the sandbox mutex and before the reply or any
// notification leaves: temp file in the same directory, fsync, rename,
// fsync of the directory.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
)

const stateVersion = 1

type stateFile struct {
	Version            int                  `json:"version"`
	Seq                int                  `json:"seq"`
	HuifuPrivateKey    string               `json:"huifu_private_key,omitempty"`    // only when generated
	MerchantPrivateKey string               `json:"merchant_private_key,omitempty"` // only when generated
	Orders             []stateOrder         `json:"orders"`
	Seen               map[string]stateSeen `json:"seen,omitempty"`
}

type stateOrder struct {
	OutOrderNo      string              `json:"out_order_no"`
	HfSeqID         string              `json:"hf_seq_id"`
	ReqSeqID        string              `json:"req_seq_id"`
	ReqDate         string              `json:"req_date"`
	HuifuID         string              `json:"huifu_id"`
	NotifyURL       string              `json:"notify_url,omitempty"`
	OpenID          string              `json:"openid,omitempty"`
	Intro           string              `json:"service_introduction,omitempty"`
	State           string              `json:"state"`
	StateDesc       string              `json:"state_description,omitempty"`
	CollectionState string              `json:"collection_state,omitempty"`
	RiskFund        money.Fen           `json:"risk_fund_fen"`
	Total           money.Fen           `json:"total_fen"`
	StartOnAccept   bool                `json:"start_on_accept,omitempty"`
	Start           time.Time           `json:"start,omitzero"`
	End             time.Time           `json:"end,omitzero"`
	EndSent         time.Time           `json:"end_sent,omitzero"`
	CreatedAt       time.Time           `json:"created_at"`
	ConfirmedAt     time.Time           `json:"confirmed_at,omitzero"`
	Refused         bool                `json:"refused,omitempty"`
	Completes       int                 `json:"completes,omitempty"`
	Registrations   []stateRegistration `json:"registrations,omitempty"`
	Payments        []statePayment      `json:"payments,omitempty"`
}

type stateRegistration struct {
	ReqSeqID   string    `json:"req_seq_id"`
	ReqDate    string    `json:"req_date"`
	OutTradeNo string    `json:"out_trade_no"`
	HfSeqID    string    `json:"hf_seq_id"`
	CreatedAt  time.Time `json:"created_at"`
	Used       bool      `json:"used,omitempty"`
	TransStat  string    `json:"trans_stat,omitempty"`
}

type statePayment struct {
	HfSeqID  string    `json:"hf_seq_id"`
	ReqSeqID string    `json:"req_seq_id"`
	ReqDate  string    `json:"req_date"`
	Amount   money.Fen `json:"amount_fen"`
	Refunded money.Fen `json:"refunded_fen,omitempty"`
	ByUser   bool      `json:"by_user,omitempty"`

	// Refunds are the refunds of the payment, for the trade bill (bill.go).
	Refunds []refundLine `json:"refunds,omitempty"`
}

type stateSeen struct {
	Path  string            `json:"path"`
	Data  string            `json:"data"`
	Reply map[string]string `json:"reply"`
}

// readState reads the state file; (nil, nil) when there is none yet.
func readState(path string) (*stateFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sandbox: state file %s: %w", path, err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("sandbox: state file %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("sandbox: state file %s: version %d, want %d", path, st.Version, stateVersion)
	}
	return &st, nil
}

// restore rebuilds orders, indexes, the seq counter and the replay cache from
// st. The maps must exist and be empty.
func (s *Sandbox) restore(st *stateFile) error {
	if st.Seq < 0 {
		return fmt.Errorf("negative seq %d", st.Seq)
	}
	s.seq = st.Seq
	for _, so := range st.Orders {
		if so.OutOrderNo == "" || so.HfSeqID == "" || so.ReqSeqID == "" {
			return fmt.Errorf("an order without out_order_no, hf_seq_id or req_seq_id")
		}
		if s.orders[so.OutOrderNo] != nil {
			return fmt.Errorf("order %s twice", so.OutOrderNo)
		}
		o := &order{outOrderNo: so.OutOrderNo, hfSeqID: so.HfSeqID, reqSeqID: so.ReqSeqID, reqDate: so.ReqDate,
			huifuID: so.HuifuID, notifyURL: so.NotifyURL, openID: so.OpenID, intro: so.Intro,
			state: so.State, stateDesc: so.StateDesc, collectionState: so.CollectionState,
			riskFund: so.RiskFund, total: so.Total, startOnAccept: so.StartOnAccept,
			start: so.Start, end: so.End, endSent: so.EndSent, createdAt: so.CreatedAt, confirmedAt: so.ConfirmedAt,
			refused: so.Refused, completes: so.Completes}
		for _, sg := range so.Registrations {
			g := &registration{o: o, reqSeqID: sg.ReqSeqID, reqDate: sg.ReqDate, outTradeNo: sg.OutTradeNo,
				hfSeqID: sg.HfSeqID, createdAt: sg.CreatedAt, used: sg.Used, transStat: sg.TransStat}
			o.regs = append(o.regs, g)
			s.regsByReq[g.reqSeqID] = g
			s.regsByHf[g.hfSeqID] = g
		}
		for _, sp := range so.Payments {
			p := &payment{o: o, HfSeqID: sp.HfSeqID, ReqSeqID: sp.ReqSeqID, ReqDate: sp.ReqDate,
				Amount: sp.Amount, Refunded: sp.Refunded, ByUser: sp.ByUser, refunds: sp.Refunds}
			o.payments = append(o.payments, p)
			s.payments[p.ReqDate+"/"+p.HfSeqID] = p
		}
		s.orders[o.outOrderNo] = o
		s.byHfSeq[o.hfSeqID] = o
		s.byCreateReq[o.reqSeqID] = o
	}
	for key, sr := range st.Seen {
		s.seen[key] = &seenRequest{path: sr.Path, data: sr.Data, reply: sr.Reply}
	}
	return nil
}

// snapshotLocked encodes the whole durable state (s.mu held).
func (s *Sandbox) snapshotLocked() ([]byte, error) {
	st := stateFile{Version: stateVersion, Seq: s.seq, HuifuPrivateKey: s.huifuPriv, MerchantPrivateKey: s.merchantPriv,
		Orders: make([]stateOrder, 0, len(s.orders)), Seen: make(map[string]stateSeen, len(s.seen))}
	for _, o := range s.orders {
		so := stateOrder{OutOrderNo: o.outOrderNo, HfSeqID: o.hfSeqID, ReqSeqID: o.reqSeqID, ReqDate: o.reqDate,
			HuifuID: o.huifuID, NotifyURL: o.notifyURL, OpenID: o.openID, Intro: o.intro,
			State: o.state, StateDesc: o.stateDesc, CollectionState: o.collectionState,
			RiskFund: o.riskFund, Total: o.total, StartOnAccept: o.startOnAccept,
			Start: o.start, End: o.end, EndSent: o.endSent, CreatedAt: o.createdAt, ConfirmedAt: o.confirmedAt,
			Refused: o.refused, Completes: o.completes}
		for _, g := range o.regs {
			so.Registrations = append(so.Registrations, stateRegistration{ReqSeqID: g.reqSeqID, ReqDate: g.reqDate,
				OutTradeNo: g.outTradeNo, HfSeqID: g.hfSeqID, CreatedAt: g.createdAt, Used: g.used, TransStat: g.transStat})
		}
		for _, p := range o.payments {
			so.Payments = append(so.Payments, statePayment{HfSeqID: p.HfSeqID, ReqSeqID: p.ReqSeqID, ReqDate: p.ReqDate,
				Amount: p.Amount, Refunded: p.Refunded, ByUser: p.ByUser, Refunds: p.refunds})
		}
		st.Orders = append(st.Orders, so)
	}
	sort.Slice(st.Orders, func(i, j int) bool { return st.Orders[i].OutOrderNo < st.Orders[j].OutOrderNo })
	for key, sr := range s.seen {
		st.Seen[key] = stateSeen{Path: sr.path, Data: sr.data, Reply: sr.reply}
	}
	return json.Marshal(st)
}

// saveLocked writes the state file (s.mu held) when there is one. A failure
// is logged: the change stays in memory and the next save carries it.
func (s *Sandbox) saveLocked() {
	if err := s.trySaveLocked(); err != nil {
		s.log.Error("sandbox state not saved", "file", s.opts.StateFile, "error", err)
	}
}

func (s *Sandbox) trySaveLocked() error {
	if s.opts.StateFile == "" {
		return nil
	}
	b, err := s.snapshotLocked()
	if err != nil {
		return err
	}
	return writeFileAtomic(s.opts.StateFile, b)
}

// writeFileAtomic replaces path with data: a temp file in the same directory,
// fsync, rename, fsync of the directory. The file is private (0600): it holds
// private keys.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync() // best effort: not every platform syncs directories
		d.Close()
	}
	return nil
}

// rearmAutoConfirmLocked gives the orders still CREATED after a load a fresh
// automatic confirmation (their timers died with the previous process).
func (s *Sandbox) rearmAutoConfirmLocked() {
	if s.autoConfirm <= 0 {
		return
	}
	for no, o := range s.orders {
		s.refresh(o)
		if o.state == payscore.StateCreated {
			delay := s.autoConfirm
			s.goLocked(func() { s.autoConfirmAfter(no, delay) })
		}
	}
}
