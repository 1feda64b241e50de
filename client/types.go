package client

import "time"

// State is a session's state (docs/state-machine.md). The main path is
// created → user_confirmed → charging → stopping → completed → deducting →
// paid; cancelled and refunded are the other ends.
type State string

// The states of a session.
const (
	StateCreated       State = "created"
	StateUserConfirmed State = "user_confirmed"
	StateCharging      State = "charging"
	StateStopping      State = "stopping"
	StateCompleted     State = "completed"
	StateDeducting     State = "deducting"
	StatePaid          State = "paid"
	StateCancelled     State = "cancelled"
	StateRefunded      State = "refunded"
)

// Final reports whether nothing more happens to a session in state s by
// itself: paid (an operator may still refund it), cancelled or refunded.
func (s State) Final() bool { return s == StatePaid || s == StateCancelled || s == StateRefunded }

// CreateSessionRequest is the body of POST /v1/sessions.
type CreateSessionRequest struct {
	// ChargerID is the charger, as its QR code names it.
	ChargerID string `json:"charger_id"`
	// Connector is the connector the car is plugged into (1, 2, …).
	Connector int `json:"connector"`
	// OpenID is the WeChat user's openid (for the mini-program's AppID).
	OpenID string `json:"openid"`
	// MaxAmountFen is the spending cap in fen, also the Pay Score risk fund:
	// the charger stops by itself before the bill passes it.
	MaxAmountFen int64 `json:"max_amount_fen"`
}

// Session is the session view (the document's Session schema): what every
// session call answers and what webhooks carry in data. Times are UTC; a nil
// time has not happened yet. Money is in fen (1/100 yuan).
type Session struct {
	ID string `json:"id"`
	// State is where the session is; CancelReason says why a cancelled one
	// was cancelled (user_cancelled, confirm_timeout, order_revoked,
	// order_expired, charger_rejected, charger_never_started, no_energy,
	// closed_by_operator).
	State        State    `json:"state"`
	CancelReason string   `json:"cancel_reason"`
	Flags        []string `json:"flags"`
	ChargerID    string   `json:"charger_id"`
	Connector    int      `json:"connector"`
	OpenID       string   `json:"openid"`
	// OutOrderNo is the Pay Score service order's number.
	OutOrderNo string `json:"out_order_no"`
	// Package is what the mini-program passes to wx.openBusinessView
	// (extraData.package) so the user confirms the order.
	Package      string `json:"package,omitempty"`
	MaxAmountFen int64  `json:"max_amount_fen"`
	MaxEnergyWh  int64  `json:"max_energy_wh"`
	// EnergyWh and AmountFen are the bill, 0 until the end is known; Lines
	// are its lines (电费 energy, 服务费 service), adding up to AmountFen.
	EnergyWh  int64  `json:"energy_wh"`
	AmountFen int64  `json:"amount_fen"`
	Lines     []Line `json:"lines"`
	Tariff    Tariff `json:"tariff"`

	CreatedAt   *time.Time `json:"created_at"`
	ConfirmedAt *time.Time `json:"confirmed_at"`
	StartedAt   *time.Time `json:"started_at"`
	EndedAt     *time.Time `json:"ended_at"`
	EndTime     *time.Time `json:"end_time"`
	PaidAt      *time.Time `json:"paid_at"`
	UpdatedAt   *time.Time `json:"updated_at"`

	Payment Payment        `json:"payment"`
	Refunds []Refund       `json:"refunds"`
	History []HistoryEntry `json:"history"`
	// Version increases with every change: of two views of one session,
	// the one with the higher Version is the newer (webhooks may arrive
	// again; use it to ignore an older view).
	Version int64 `json:"version"`
	// Live is what is measured while charging (nil otherwise).
	Live   *Live   `json:"live,omitempty"`
	Timers []Timer `json:"timers,omitempty"`
}

// Line is one line of a bill.
type Line struct {
	Name      string `json:"name"`
	AmountFen int64  `json:"amount_fen"`
	EnergyWh  int64  `json:"energy_wh"`
}

// Tariff is the prices a session was priced with.
type Tariff struct {
	ID      string   `json:"id"`
	Periods []Period `json:"periods"`
}

// Period is a time-of-use period, local Beijing time ("24:00" ends the day).
type Period struct {
	From             string `json:"from"`
	To               string `json:"to"`
	EnergyFenPerKWh  int64  `json:"energy_fen_per_kwh"`
	ServiceFenPerKWh int64  `json:"service_fen_per_kwh"`
}

// Payment is the money side of a session.
type Payment struct {
	Attempts    int    `json:"attempts"`
	Failures    int    `json:"failures"`
	Registered  bool   `json:"registered"`
	OutTradeNo  string `json:"out_trade_no,omitempty"`
	LastFailure string `json:"last_failure,omitempty"`
	PaidFen     int64  `json:"paid_fen"`
	ByUser      bool   `json:"by_user"`
	HfSeqID     string `json:"hf_seq_id,omitempty"`
	ReqDate     string `json:"req_date,omitempty"`
}

// Refund is one refund; Status is pending, succeeded or failed.
type Refund struct {
	ID        string    `json:"id"`
	AmountFen int64     `json:"amount_fen"`
	Reason    string    `json:"reason"`
	By        string    `json:"by"`
	At        time.Time `json:"at"`
	Status    string    `json:"status"`
}

// HistoryEntry is one transition; From is empty for the creation, By is
// app, operator:<name>, charger, payscore or timer.
type HistoryEntry struct {
	At    time.Time `json:"at"`
	From  State     `json:"from"`
	To    State     `json:"to"`
	Event string    `json:"event"`
	By    string    `json:"by"`
	Note  string    `json:"note,omitempty"`
}

// Live is what is being measured while charging.
type Live struct {
	LastMeterWh int64      `json:"last_meter_wh"`
	LastMeterAt *time.Time `json:"last_meter_at"`
	EnergyWh    int64      `json:"energy_wh"`
	AmountFen   int64      `json:"amount_fen"`
}

// Timer is a timer armed on the session.
type Timer struct {
	ID    string    `json:"id"`
	Kind  string    `json:"kind"`
	DueAt time.Time `json:"due_at"`
}
