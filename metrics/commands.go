package metrics

import "github.com/prometheus/client_golang/prometheus"

// resendWhy are the why label values of chargeflow_commands_resent_total
// (session.ResendOnline, session.ResendUnanswered; metrics does not import
// session).
var resendWhy = []string{"online", "unanswered"}

func newCommandsResent() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "commands_resent_total",
		Help: "Charger commands published again with the same cmd_id because the charger had not answered, by type (start, stop) and why (online: its state came back online; unanswered: still unanswered after the re-send period)."},
		[]string{"type", "why"})
}

// CommandResent implements session.ResendObserver.
func (m *Metrics) CommandResent(typ, why string) {
	if typ != "start" && typ != "stop" {
		typ = other
	}
	known := false
	for _, w := range resendWhy {
		known = known || w == why
	}
	if !known {
		why = other
	}
	m.resent.WithLabelValues(typ, why).Inc()
}

func (m *Metrics) presetResent() {
	for _, t := range []string{"start", "stop"} {
		for _, w := range resendWhy {
			m.resent.WithLabelValues(t, w)
		}
	}
}
