package session

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// DefaultResendEvery is how long the outbox waits before it publishes an
// unanswered start or stop again (docs/protocol.md, "Commands the charger has
// not answered"): with its jitter (±1/8) and the workers' idle wait it stays
// under the contract's 10 s.
const DefaultResendEvery = 8 * time.Second

// resendNote is the outbox's note on a command task waiting to be sent
// again: a try that was not a failure.
const resendNote = "re-send while the charger has not answered"

// Why a command went out again (the label of CommandResent).
const (
	ResendOnline     = "online"     // the charger's state came back online
	ResendUnanswered = "unanswered" // still unanswered after ResendEvery
)

// ResendObserver is told of every command published again with the same
// cmd_id. An Observer that also implements it gets the calls (metrics).
type ResendObserver interface {
	CommandResent(typ, why string)
}

// taskKey carries the outbox task being performed in its context.
type taskKey struct{}

func withTask(ctx context.Context, t store.Task) context.Context {
	return context.WithValue(ctx, taskKey{}, t)
}

func taskOf(ctx context.Context) store.Task {
	t, _ := ctx.Value(taskKey{}).(store.Task)
	return t
}

// command publishes a start or stop the machine still wants (perform asked
// it). The effect a command was first asked with stays in the outbox: once
// published it comes back after ResendEvery, and perform asks the machine
// again, so it is sent until the charger answers, the start's deadline
// passes or the session no longer wants it. A repeat asked for because the
// charger came back online (fsm.ReasonResend) is published once.
func (e *Engine) command(ctx context.Context, s fsm.Session, eff fsm.Effect) (string, error) {
	c := charger.Command{CmdID: eff.CmdID, Type: charger.CmdStop, SessionID: eff.Session, Connector: eff.Connector}
	if eff.Kind == fsm.EffSendStart {
		c.Type, c.Deadline, c.MaxEnergyWh = charger.CmdStart, eff.Deadline, eff.MaxEnergyWh
	}
	out, err := e.send(ctx, eff, c)
	if err != nil {
		return out, err
	}
	why := ""
	switch t := taskOf(ctx); {
	case eff.Reason == fsm.ReasonResend:
		why = ResendOnline
	case t.LastError == resendNote:
		why = ResendUnanswered
	}
	if why == "" && c.Type == charger.CmdStart && e.obs != nil {
		e.obs.ConfirmToStart(e.now().Sub(s.ConfirmedAt))
	}
	if ro, ok := e.obs.(ResendObserver); ok && why != "" {
		ro.CommandResent(c.Type, why)
	}
	if why != "" {
		e.log.Info("command sent again", "session", s.ID, "charger", s.ChargerID, "cmd_id", c.CmdID, "why", why)
	}
	if eff.Reason == fsm.ReasonResend {
		return out, nil
	}
	return out, errDefer{until: e.now().Add(e.resendWait()), note: resendNote, outcome: out}
}

// resendWait is ResendEvery with ±1/8 jitter, so the repeats of a fleet of
// sessions do not fall in step.
func (e *Engine) resendWait() time.Duration {
	d := e.cfg.ResendEvery
	j := int64(d / 8)
	return d - time.Duration(j) + time.Duration(rand.Int64N(2*j+1))
}

// backoff is the wait before trying a failed effect again: a command is
// never left longer than ResendEvery (the charger may be waiting for it).
func (e *Engine) backoff(kind fsm.EffectKind, tries int) time.Duration {
	d := e.retryBackoff(tries)
	if kind == fsm.EffSendStart || kind == fsm.EffSendStop {
		d = min(d, e.resendWait())
	}
	return d
}
