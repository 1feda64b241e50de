package metrics

import (
	"strings"

	"github.com/chargeflow/chargeflow/payscore"
)

// PayScore returns the observer to set as payscore.Config.Observer. Every
// attempt is counted and timed; the final attempt of a call also counts the
// call, with that attempt's result.
func (m *Metrics) PayScore() payscore.Observer {
	return payscore.ObserverFunc(func(i payscore.CallInfo) {
		ep, res := endpointLabel(i.Endpoint), resultLabel(i.Result)
		m.payAttempts.WithLabelValues(ep, res).Inc()
		m.payDuration.WithLabelValues(ep).Observe(max(i.Duration, 0).Seconds())
		if i.Final {
			m.payCalls.WithLabelValues(ep, res).Inc()
		}
	})
}

// endpoints names the profile's paths for the endpoint label.
var endpoints = map[string]string{
	payscore.PathCreateOrder:       "create_order",
	payscore.PathQueryOrder:        "query_order",
	payscore.PathCancelOrder:       "cancel_order",
	payscore.PathCompleteOrder:     "complete_order",
	payscore.PathRegisterDeduction: "register_deduction",
	payscore.PathQueryDeduction:    "query_deduction",
	payscore.PathDebit:             "debit",
	payscore.PathRefund:            "refund",
	payscore.PathTradeBill:         "trade_bill",
}

func endpointLabel(path string) string {
	if n, ok := endpoints[path]; ok {
		return n
	}
	return other
}

// respCodes names Huifu's resp_code values (docs/payscore.md §3) for the result
// label: a dashboard reads "system_error" better than "99999999".
var respCodes = map[string]string{
	payscore.CodeSuccess:        "success",
	payscore.CodeAccepted:       "accepted",
	payscore.CodeBadParameter:   "bad_parameter",
	payscore.CodeDuplicate:      "duplicate",
	payscore.CodeTooFrequent:    "too_frequent",
	payscore.CodeNotFound:       "not_found",
	payscore.CodeLogicError:     "logic_error",
	payscore.CodeProductConfig:  "product_config",
	payscore.CodeMerchantConfig: "merchant_config",
	payscore.CodeRisk:           "risk",
	payscore.CodeUnknown:        "unknown",
	payscore.CodeSystemError:    "system_error",
}

// resultLabel maps CallInfo.Result onto a fixed set: the named resp_codes,
// the client's transport outcomes, HTTP statuses by class (429 kept apart:
// it means "slow down"), and "other_code" for a resp_code we do not know.
func resultLabel(r string) string {
	if n, ok := respCodes[r]; ok {
		return n
	}
	switch r {
	case "network", "timeout", "bad_reply", "bad_signature", "bad_request", "http_429":
		return r
	}
	if s, ok := strings.CutPrefix(r, "http_"); ok && len(s) == 3 {
		switch s[0] {
		case '4':
			return "http_4xx"
		case '5':
			return "http_5xx"
		}
		return "http_other"
	}
	if len(r) == 8 && strings.Trim(r, "0123456789") == "" {
		return "other_code"
	}
	return other
}
