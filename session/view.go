package session

import (
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/store"
)

// View is a session as the API shows it (docs/contract.md §3, GET /v1/sessions/{id}).
// It is also the `data:` of the SSE stream's `session` events.
type View struct {
	ID           string        `json:"id"`
	State        fsm.State     `json:"state"`
	CancelReason string        `json:"cancel_reason"`
	Flags        []fsm.Flag    `json:"flags"`
	ChargerID    string        `json:"charger_id"`
	Connector    int           `json:"connector"`
	OpenID       string        `json:"openid"`
	OutOrderNo   string        `json:"out_order_no"`
	Package      string        `json:"package,omitempty"`
	MaxAmountFen money.Fen     `json:"max_amount_fen"`
	MaxEnergyWh  int64         `json:"max_energy_wh"`
	EnergyWh     int64         `json:"energy_wh"`
	AmountFen    money.Fen     `json:"amount_fen"`
	Lines        []money.Line  `json:"lines"`
	Tariff       money.Tariff  `json:"tariff"`
	CreatedAt    *time.Time    `json:"created_at"`
	ConfirmedAt  *time.Time    `json:"confirmed_at"`
	StartedAt    *time.Time    `json:"started_at"`
	EndedAt      *time.Time    `json:"ended_at"`
	EndTime      *time.Time    `json:"end_time"`
	PaidAt       *time.Time    `json:"paid_at"`
	UpdatedAt    *time.Time    `json:"updated_at"`
	Payment      PaymentView   `json:"payment"`
	Refunds      []RefundView  `json:"refunds"`
	History      []HistoryView `json:"history"`
	Version      int64         `json:"version"`
	Live         *LiveView     `json:"live,omitempty"`
	Timers       []fsm.Timer   `json:"timers,omitempty"`
}

// LiveView is what is being measured while charging.
type LiveView struct {
	LastMeterWh int64      `json:"last_meter_wh"`
	LastMeterAt *time.Time `json:"last_meter_at"`
	EnergyWh    int64      `json:"energy_wh"`
	AmountFen   money.Fen  `json:"amount_fen"`
}

// PaymentView is the money side of a session.
type PaymentView struct {
	Attempts    int       `json:"attempts"` // deductions started (fsm.Payment.Deductions)
	Failures    int       `json:"failures"`
	Registered  bool      `json:"registered"`
	OutTradeNo  string    `json:"out_trade_no,omitempty"`
	LastFailure string    `json:"last_failure,omitempty"`
	PaidFen     money.Fen `json:"paid_fen"`
	ByUser      bool      `json:"by_user"`
	HfSeqID     string    `json:"hf_seq_id,omitempty"`
	ReqDate     string    `json:"req_date,omitempty"`
}

// RefundView is one refund.
type RefundView struct {
	ID        string     `json:"id"`
	AmountFen money.Fen  `json:"amount_fen"`
	Reason    string     `json:"reason"`
	By        fsm.Source `json:"by"`
	At        time.Time  `json:"at"`
	Status    string     `json:"status"`
}

// HistoryView is one history entry: {"at","from","to","event","by"}.
type HistoryView struct {
	At    time.Time     `json:"at"`
	From  fsm.State     `json:"from"`
	To    fsm.State     `json:"to"`
	Event fsm.EventType `json:"event"`
	By    fsm.Source    `json:"by"`
	Note  string        `json:"note,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// NewView renders a session and its history.
func NewView(s fsm.Session, history []fsm.HistoryEntry) View {
	v := View{
		ID: s.ID, State: s.State, CancelReason: s.CancelReason, Flags: s.Flags, ChargerID: s.ChargerID,
		Connector: s.Connector, OpenID: s.OpenID, OutOrderNo: s.OutOrderNo, Package: s.Package,
		MaxAmountFen: s.MaxAmountFen, MaxEnergyWh: s.MaxEnergyWh, EnergyWh: s.EnergyWh, AmountFen: s.AmountFen,
		Lines: s.Lines, Tariff: s.Tariff,
		CreatedAt: timePtr(s.CreatedAt), ConfirmedAt: timePtr(s.ConfirmedAt), StartedAt: timePtr(s.StartedAt),
		EndedAt: timePtr(s.EndedAt), EndTime: timePtr(s.EndTime), PaidAt: timePtr(s.PaidAt), UpdatedAt: timePtr(s.UpdatedAt),
		Payment: PaymentView{Attempts: s.Payment.Deductions, Failures: s.Payment.Failures, Registered: s.Payment.Registered,
			OutTradeNo: s.Payment.OutTradeNo, LastFailure: s.Payment.LastFail, PaidFen: s.Payment.PaidFen,
			ByUser: s.Payment.ByUser, HfSeqID: s.Payment.HfSeqID, ReqDate: s.Payment.ReqDate},
		Version: s.Version, Timers: s.Timers,
	}
	if v.Flags == nil {
		v.Flags = []fsm.Flag{}
	}
	if v.Lines == nil {
		v.Lines = []money.Line{}
	}
	v.Refunds = make([]RefundView, 0, len(s.Refunds))
	for _, r := range s.Refunds {
		v.Refunds = append(v.Refunds, RefundView{ID: r.ID, AmountFen: r.AmountFen, Reason: r.Reason, By: r.By, At: r.At.UTC(), Status: r.Status})
	}
	v.History = make([]HistoryView, 0, len(history))
	for _, h := range history {
		v.History = append(v.History, HistoryView{At: h.At.UTC(), From: h.From, To: h.To, Event: h.Event, By: h.By, Note: h.Note})
	}
	if (s.State == fsm.Charging || s.State == fsm.Stopping) && !s.EndKnown {
		live := &LiveView{LastMeterWh: s.LastMeterWh, LastMeterAt: timePtr(s.LastMeterAt), EnergyWh: s.Split.Total()}
		if len(s.Split) == len(s.Tariff.Periods) && len(s.Split) > 0 {
			live.AmountFen = s.Tariff.Price(s.Split, s.MaxAmountFen).TotalFen
		}
		v.Live = live
	}
	return v
}

// ChargerView is a charger as the API shows it (GET /v1/chargers/{id}).
type ChargerView struct {
	ID          string          `json:"id"`
	Connectors  []ConnectorView `json:"connectors"`
	TariffID    string          `json:"tariff_id"`
	Online      bool            `json:"online"`
	BootID      string          `json:"boot_id,omitempty"`
	Model       string          `json:"model,omitempty"`
	FW          string          `json:"fw,omitempty"`
	LastHeardAt *time.Time      `json:"last_heard_at"`
	HasPassword bool            `json:"has_password"`
}

// ConnectorView is one connector and its last reported status.
type ConnectorView struct {
	ID      int    `json:"id"`
	Status  string `json:"status"`
	Session string `json:"session,omitempty"` // the active session, when the caller looked it up
}

// NewChargerView renders a charger; the password hash is never shown.
func NewChargerView(c store.Charger) ChargerView {
	v := ChargerView{ID: c.ID, TariffID: c.TariffID, Online: c.Online, BootID: c.BootID, Model: c.Model, FW: c.FW,
		LastHeardAt: timePtr(c.LastHeardAt), HasPassword: c.PasswordHash != ""}
	v.Connectors = make([]ConnectorView, 0, len(c.Connectors))
	for _, id := range c.Connectors {
		st := c.ConnectorStatus[id]
		if st == "" {
			st = "unknown"
		}
		v.Connectors = append(v.Connectors, ConnectorView{ID: id, Status: st})
	}
	return v
}
