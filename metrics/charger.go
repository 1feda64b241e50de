package metrics

import (
	"context"
	"time"

	"github.com/chargeflow/chargeflow/charger"
)

// inKinds are the kind label values of charger messages in: the up kinds,
// "other" for an up kind the protocol does not define, and "unparsed" for
// a message on a topic the link could not parse.
var inKinds = []string{string(charger.KindState), string(charger.KindStatus), string(charger.KindMeter),
	string(charger.KindTxn), string(charger.KindAck), other, "unparsed"}

func inKindLabel(k charger.Kind) string {
	switch {
	case k == "":
		return "unparsed"
	case k.Up():
		return string(k)
	}
	return other
}

// WrapHandler returns h counted and timed: every call is one message
// handed to the engine (a message the link retries after an error counts
// again, as result="error" until it is stored).
func (m *Metrics) WrapHandler(h charger.Handler) charger.Handler {
	return func(ctx context.Context, in charger.Inbound) error {
		start := time.Now()
		err := h(ctx, in)
		kind := inKindLabel(in.Kind)
		m.mqttHandle.WithLabelValues(kind).Observe(time.Since(start).Seconds())
		m.mqttIn.WithLabelValues(kind, okOrError(err)).Inc()
		return err
	}
}

// Commander is what the engine publishes to chargers through
// (session.Commander, implemented by every charger.Link).
type Commander interface {
	SendCommand(ctx context.Context, chargerID string, c charger.Command) error
	AckTxn(ctx context.Context, chargerID, eventID string) error
}

// WrapCommander returns c with every publish counted by kind, type and
// result. Pass it to session.New as the engine's commander; the link itself
// is still started and closed as before.
func (m *Metrics) WrapCommander(c Commander) Commander { return commander{c, m} }

type commander struct {
	next Commander
	m    *Metrics
}

func (c commander) SendCommand(ctx context.Context, chargerID string, cmd charger.Command) error {
	err := c.next.SendCommand(ctx, chargerID, cmd)
	typ := cmd.Type
	if typ != charger.CmdStart && typ != charger.CmdStop {
		typ = other
	}
	c.m.mqttOut.WithLabelValues(string(charger.KindCmd), typ, okOrError(err)).Inc()
	return err
}

func (c commander) AckTxn(ctx context.Context, chargerID, eventID string) error {
	err := c.next.AckTxn(ctx, chargerID, eventID)
	c.m.mqttOut.WithLabelValues(string(charger.KindTxnAck), string(charger.KindTxnAck), okOrError(err)).Inc()
	return err
}

func okOrError(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}
