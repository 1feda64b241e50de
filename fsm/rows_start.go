package fsm

import (
	"strconv"
	"strings"

	"github.com/chargeflow/chargeflow/money"
)

// The charger command ids: deterministic, so a command sent twice is the
// same command (the charger de-duplicates on cmd_id, docs/protocol.md).

// StartCmdID is the cmd_id of session id's start.
func StartCmdID(sessionID string) string { return sessionID + "-start" }

// StopCmdID is the cmd_id of session id's n-th stop.
func StopCmdID(sessionID string, n int) string { return sessionID + "-stop-" + strconv.Itoa(n) }

// CommandSession returns the session a cmd_id of ours belongs to, and
// whether it is a stop.
func CommandSession(cmdID string) (sessionID string, stop, ok bool) {
	if id, found := strings.CutSuffix(cmdID, "-start"); found && id != "" {
		return id, false, true
	}
	if i := strings.LastIndex(cmdID, "-stop-"); i > 0 {
		if n, err := strconv.Atoi(cmdID[i+len("-stop-"):]); err == nil && n > 0 {
			return cmdID[:i], true, true
		}
	}
	return "", false, false
}

// stopNumber is the number of stop cmdID of s, or 0.
func (s *Session) stopNumber(cmdID string) int {
	for n := s.StopCount; n > 0; n-- {
		if StopCmdID(s.ID, n) == cmdID {
			return n
		}
	}
	return 0
}

var (
	confirmed     = guard("already confirmed", func(st *step) bool { return !st.s.ConfirmedAt.IsZero() })
	answersStart  = guard("answers our start", func(st *step) bool { return st.e.CmdID == "" || st.e.CmdID == st.s.StartCmdID })
	startAnswered = guardNot("the start was answered", "the start is not answered yet", func(st *step) bool { return !st.s.StartAnsweredAt.IsZero() })
	startSent     = guard("a start was sent", func(st *step) bool { return !st.s.StartSentAt.IsZero() })
	hasStarted    = guardNot("the charger started", "the charger never started", func(st *step) bool { return !st.s.StartedAt.IsZero() })
)

// doConfirm: USER_CONFIRM is known (invariant 1). The only place a start is
// ever asked for.
var doConfirm = action("send start; arm the start timeout", func(st *step) error {
	s, e := &st.s, st.e
	s.ConfirmedAt = e.At
	s.ConfirmedBy = e.Reason
	s.StartCmdID = StartCmdID(s.ID)
	s.StartSentAt = e.At
	eff := st.effect(EffSendStart)
	eff.CmdID = s.StartCmdID
	eff.Deadline = e.At.Add(st.m.cfg.StartTimeout)
	eff.MaxEnergyWh = s.MaxEnergyWh
	st.arm(TimerStart, e.At.Add(st.m.cfg.StartTimeout))
	return nil
})

var doStartAnswered = action("record that the charger answered the start", func(st *step) error {
	st.s.StartAnsweredAt = st.e.At
	return nil
})

var doStartRejected = action("cancel (charger_rejected)", func(st *step) error {
	s := &st.s
	s.StartAnsweredAt = st.e.At
	s.CancelReason = ReasonChargerRejected
	st.note("charger rejected start: " + st.e.Reason)
	st.enterCancelled()
	return nil
})

var doStarted = action("record the start register and time; apply an `ended` that came first", func(st *step) error {
	s, e := &st.s, st.e
	s.LastHeardAt = maxTime(s.LastHeardAt, e.At)
	var skew string
	s.StartedAt, skew = st.chargerTime(s.StartSentAt)
	st.skew(skew)
	s.StartMeterWh = e.MeterWh
	s.LastMeterWh = e.MeterWh
	s.LastMeterAt = s.StartedAt
	s.Split = make(money.Split, len(s.Tariff.Periods))
	if pe := s.PendingEnd; pe != nil {
		s.PendingEnd = nil
		st.ending = st.endingAt(pe.At, pe.MeterWh, pe.Reason, true)
		return st.follow(EvEnded)
	}
	return nil
})

// doLateStart: a start that arrives after the session was cancelled (e.g.
// after the start timeout): make sure it stops.
var doLateStart = action("send stop", func(st *step) error {
	st.s.LastHeardAt = maxTime(st.s.LastHeardAt, st.e.At)
	st.anomaly("charger started a cancelled session")
	st.sendStop()
	return nil
})

// enterCancelled does what entering `cancelled` asks for: cancel the Pay
// Score order where it still exists, stop the charger if a start was ever
// sent, and drop every timer.
func (st *step) enterCancelled() {
	s := &st.s
	if s.OutOrderNo != "" && st.e.Type != EvOrderClosed {
		eff := st.effect(EffCancelOrder)
		eff.OutOrderNo = s.OutOrderNo
		eff.Reason = s.CancelReason
	}
	if !s.StartSentAt.IsZero() && !s.EndKnown {
		st.sendStop()
	}
	for len(s.Timers) > 0 {
		st.disarm(s.Timers[0].Kind)
	}
}

func (st *step) sendStop() {
	s := &st.s
	s.StopCount++
	s.StopSentAt = st.e.At
	eff := st.effect(EffSendStop)
	eff.CmdID = StopCmdID(s.ID, s.StopCount)
}
