// Package charger implements chargeflow's side of the charger protocol
// (docs/protocol.md, "v1"): topic names, message types and
// their validation, the link to the MQTT broker (an external broker through
// paho, or an embedded mochi broker with our own auth and ACL), and charger
// presence. The simulator lives in charger/sim.
//
// Names in this file are contract: they are the JSON keys and topics of docs/protocol.md §2.
package charger

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// DefaultPrefix is the default topic prefix (docs/protocol.md §1).
const DefaultPrefix = "ev/v1"

// MaxPayload caps what Decode accepts; anything bigger is an anomaly, not a
// message (no legitimate v1 payload comes near it).
const MaxPayload = 64 << 10

// Kind names a message type by the last segment(s) of its topic.
type Kind string

// The message kinds. Up kinds (charger → cloud) arrive on the link; Cmd and
// TxnAck are what chargeflow sends.
const (
	KindState  Kind = "state"  // {prefix}/{cp}/state, retained
	KindStatus Kind = "status" // {prefix}/{cp}/up/status
	KindMeter  Kind = "meter"  // {prefix}/{cp}/up/meter
	KindTxn    Kind = "txn"    // {prefix}/{cp}/up/txn
	KindAck    Kind = "ack"    // {prefix}/{cp}/up/ack
	KindCmd    Kind = "cmd"    // {prefix}/{cp}/down/cmd, never retained
	KindTxnAck Kind = "txnack" // {prefix}/{cp}/down/txnack
)

// Up reports whether messages of this kind are sent by chargers.
func (k Kind) Up() bool {
	switch k {
	case KindState, KindStatus, KindMeter, KindTxn, KindAck:
		return true
	}
	return false
}

var chargerIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidChargerID reports whether id is a legal charger id: docs/protocol.md §1's
// `[A-Za-z0-9_-]{1,64}`. Because it excludes '/', '+', '#' and '$', an id can
// be put into a topic or a filter without escaping.
func ValidChargerID(id string) bool { return chargerIDRe.MatchString(id) }

// Topics builds and parses the protocol's topic names under one prefix.
// The zero value uses DefaultPrefix.
type Topics struct {
	Prefix string // without trailing slash, e.g. "ev/v1"
}

func (t Topics) prefix() string {
	if t.Prefix == "" {
		return DefaultPrefix
	}
	return strings.TrimSuffix(t.Prefix, "/")
}

// State is the retained presence topic of charger cp (also its will topic).
func (t Topics) State(cp string) string { return t.prefix() + "/" + cp + "/state" }

// Up is the topic for an up kind other than state, e.g. Up(cp, KindMeter).
func (t Topics) Up(cp string, k Kind) string {
	if k == KindState {
		return t.State(cp)
	}
	return t.prefix() + "/" + cp + "/up/" + string(k)
}

// Cmd is the topic chargeflow publishes commands on.
func (t Topics) Cmd(cp string) string { return t.prefix() + "/" + cp + "/down/cmd" }

// TxnAck is the topic chargeflow acknowledges txn events on.
func (t Topics) TxnAck(cp string) string { return t.prefix() + "/" + cp + "/down/txnack" }

// Down is the filter a charger subscribes to: {prefix}/{cp}/down/#.
func (t Topics) Down(cp string) string { return t.prefix() + "/" + cp + "/down/#" }

// StateFilter and UpFilter are what chargeflow subscribes to (every charger).
func (t Topics) StateFilter() string { return t.prefix() + "/+/state" }

// UpFilter matches every charger's up topics.
func (t Topics) UpFilter() string { return t.prefix() + "/+/up/#" }

// Parse splits a topic of this protocol into charger id and kind. ok is
// false for anything else (other prefix, bad charger id, unknown kind,
// extra levels).
func (t Topics) Parse(topic string) (cp string, kind Kind, ok bool) {
	p := t.prefix() + "/"
	if !strings.HasPrefix(topic, p) {
		return "", "", false
	}
	parts := strings.Split(topic[len(p):], "/")
	if len(parts) < 2 || !ValidChargerID(parts[0]) {
		return "", "", false
	}
	cp = parts[0]
	switch {
	case len(parts) == 2 && parts[1] == "state":
		return cp, KindState, true
	case len(parts) == 3 && parts[1] == "up":
		k := Kind(parts[2])
		if k.Up() && k != KindState {
			return cp, k, true
		}
	case len(parts) == 3 && parts[1] == "down":
		if k := Kind(parts[2]); k == KindCmd || k == KindTxnAck {
			return cp, k, true
		}
	}
	return "", "", false
}

// Connector statuses (docs/protocol.md §2).
const (
	StatusAvailable     = "available"
	StatusPreparing     = "preparing"
	StatusCharging      = "charging"
	StatusSuspendedEV   = "suspended_ev"
	StatusSuspendedEVSE = "suspended_evse"
	StatusFinishing     = "finishing"
	StatusFaulted       = "faulted"
	StatusUnavailable   = "unavailable"
)

// Txn types, command types and ack results.
const (
	TxnStarted = "started"
	TxnEnded   = "ended"

	CmdStart = "start"
	CmdStop  = "stop"

	ResultAccepted = "accepted"
	ResultRejected = "rejected"
)

// ended.reason values.
const (
	EndRemote         = "remote"
	EndLocal          = "local"
	EndEVDisconnected = "ev_disconnected"
	EndEnergyLimit    = "energy_limit"
	EndFault          = "fault"
	EndPowerLoss      = "power_loss"
	EndReboot         = "reboot"
)

// rejected.reason values.
const (
	RejectBusy             = "busy"
	RejectNotPlugged       = "not_plugged"
	RejectFaulted          = "faulted"
	RejectUnknownConnector = "unknown_connector"
	RejectExpired          = "expired"
	RejectBadRequest       = "bad_request"
)

// Offline reasons on the state topic.
const (
	OfflineShutdown = "shutdown"
	OfflineLWT      = "lwt"
)

var (
	connectorStatuses = set(StatusAvailable, StatusPreparing, StatusCharging, StatusSuspendedEV,
		StatusSuspendedEVSE, StatusFinishing, StatusFaulted, StatusUnavailable)
	endReasons    = set(EndRemote, EndLocal, EndEVDisconnected, EndEnergyLimit, EndFault, EndPowerLoss, EndReboot)
	rejectReasons = set(RejectBusy, RejectNotPlugged, RejectFaulted, RejectUnknownConnector, RejectExpired, RejectBadRequest)
)

func set(v ...string) map[string]bool {
	m := make(map[string]bool, len(v))
	for _, s := range v {
		m[s] = true
	}
	return m
}

// Message is one decoded protocol message; its dynamic type is one of
// StateMsg, StatusMsg, MeterMsg, TxnMsg, AckMsg, Command, TxnAck.
type Message interface{ Kind() Kind }

// ConnectorState is one entry of StateMsg.Connectors.
type ConnectorState struct {
	ID     int    `json:"id"`
	Status string `json:"status"`
}

// StateMsg is the retained {prefix}/{cp}/state payload: online with a boot id
// (new each power-up), or offline with reason "shutdown" (clean) or "lwt"
// (the will: the broker lost the charger).
type StateMsg struct {
	Online     bool             `json:"online"`
	BootID     string           `json:"boot_id,omitempty"`
	Model      string           `json:"model,omitempty"`
	FW         string           `json:"fw,omitempty"`
	Connectors []ConnectorState `json:"connectors,omitempty"`
	Reason     string           `json:"reason,omitempty"`
	TS         time.Time        `json:"ts,omitzero"`
}

// StatusMsg is up/status: a connector's status changed.
type StatusMsg struct {
	Connector int       `json:"connector"`
	Status    string    `json:"status"`
	Error     string    `json:"error"`
	TS        time.Time `json:"ts"`
}

// MeterMsg is up/meter: the register (Wh, never a delta) during a session;
// (session_id, seq) identifies it for de-duplication.
type MeterMsg struct {
	SessionID string    `json:"session_id"`
	Connector int       `json:"connector"`
	Seq       int64     `json:"seq"`
	TS        time.Time `json:"ts"`
	EnergyWh  int64     `json:"energy_wh"`
	PowerW    int64     `json:"power_w"`
}

// TxnMsg is up/txn: a transaction event kept by the charger until
// down/txnack names its event_id. De-duplicate on event_id and on
// (session_id, type).
type TxnMsg struct {
	EventID   string    `json:"event_id"`
	SessionID string    `json:"session_id"`
	Connector int       `json:"connector"`
	Type      string    `json:"type"`
	TS        time.Time `json:"ts"`
	MeterWh   int64     `json:"meter_wh"`
	Reason    string    `json:"reason,omitempty"`
	Offline   bool      `json:"offline"`
}

// AckMsg is up/ack: the charger's answer to a Command, same cmd_id.
type AckMsg struct {
	CmdID  string `json:"cmd_id"`
	Result string `json:"result"`
	Reason string `json:"reason,omitempty"`
}

// Command is down/cmd. A start received after Deadline must be rejected
// with "expired"; MaxEnergyWh (0 = none) makes the charger end by itself
// with "energy_limit".
type Command struct {
	CmdID       string    `json:"cmd_id"`
	Type        string    `json:"type"`
	SessionID   string    `json:"session_id"`
	Connector   int       `json:"connector"`
	Deadline    time.Time `json:"deadline,omitzero"`
	MaxEnergyWh int64     `json:"max_energy_wh,omitempty"`
}

// TxnAck is down/txnack.
type TxnAck struct {
	EventID string `json:"event_id"`
}

func (StateMsg) Kind() Kind  { return KindState }
func (StatusMsg) Kind() Kind { return KindStatus }
func (MeterMsg) Kind() Kind  { return KindMeter }
func (TxnMsg) Kind() Kind    { return KindTxn }
func (AckMsg) Kind() Kind    { return KindAck }
func (Command) Kind() Kind   { return KindCmd }
func (TxnAck) Kind() Kind    { return KindTxnAck }

// InvalidError says why a payload is not a valid message of its kind. The
// engine stores such a payload as an anomaly with Reason and the raw bytes;
// it is never a reason to drop or to crash.
type InvalidError struct {
	Kind   Kind
	Reason string // e.g. "meter: energy_wh missing"
}

func (e *InvalidError) Error() string { return "invalid message: " + e.Reason }

func invalid(k Kind, format string, a ...any) *InvalidError {
	return &InvalidError{Kind: k, Reason: string(k) + ": " + fmt.Sprintf(format, a...)}
}

// Decode parses and validates one payload of the given kind. Unknown keys
// are ignored (docs/protocol.md §1: forward compatibility). Every failure is an
// *InvalidError; Decode never panics on any input (it is fuzzed).
func Decode(kind Kind, payload []byte) (Message, error) {
	var req []string
	var m Message
	var err error
	switch kind {
	case KindState:
		req = []string{"online"}
	case KindStatus:
		req = []string{"connector", "status", "ts"}
	case KindMeter:
		req = []string{"session_id", "connector", "seq", "ts", "energy_wh"}
	case KindTxn:
		req = []string{"event_id", "session_id", "connector", "type", "ts", "meter_wh"}
	case KindAck:
		req = []string{"cmd_id", "result"}
	case KindCmd:
		req = []string{"cmd_id", "type", "session_id"}
	case KindTxnAck:
		req = []string{"event_id"}
	default:
		return nil, &InvalidError{Kind: kind, Reason: fmt.Sprintf("unknown kind %q", kind)}
	}
	if len(payload) > MaxPayload {
		return nil, invalid(kind, "payload too large (%d bytes)", len(payload))
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(payload, &keys); err != nil || keys == nil {
		return nil, invalid(kind, "not a JSON object")
	}
	for _, k := range req {
		if v, ok := keys[k]; !ok || bytes.Equal(v, []byte("null")) {
			return nil, invalid(kind, "%s missing", k)
		}
	}
	switch kind {
	case KindState:
		var v StateMsg
		if err = unmarshal(kind, payload, &v); err == nil {
			err = v.validate()
		}
		m = v
	case KindStatus:
		var v StatusMsg
		if err = unmarshal(kind, payload, &v); err == nil {
			err = v.validate()
		}
		m = v
	case KindMeter:
		var v MeterMsg
		if err = unmarshal(kind, payload, &v); err == nil {
			err = v.validate()
		}
		m = v
	case KindTxn:
		var v TxnMsg
		if err = unmarshal(kind, payload, &v); err == nil {
			err = v.validate()
		}
		m = v
	case KindAck:
		var v AckMsg
		if err = unmarshal(kind, payload, &v); err == nil {
			err = v.validate()
		}
		m = v
	case KindCmd:
		var v Command
		if err = unmarshal(kind, payload, &v); err == nil {
			err = v.validate()
		}
		m = v
	case KindTxnAck:
		var v TxnAck
		if err = unmarshal(kind, payload, &v); err == nil {
			err = v.validate()
		}
		m = v
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

func unmarshal(k Kind, payload []byte, v any) error {
	err := json.Unmarshal(payload, v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return invalid(k, "%s has the wrong type", te.Field)
	}
	// time.Time's own parser reports a bad timestamp as a plain error.
	if strings.Contains(err.Error(), "parsing time") || strings.Contains(err.Error(), "Time.UnmarshalJSON") {
		return invalid(k, "timestamp is not RFC 3339 with an offset")
	}
	return invalid(k, "bad value: %v", err)
}

func (v StateMsg) validate() error {
	k := KindState
	if v.Online {
		if v.BootID == "" {
			return invalid(k, "boot_id missing")
		}
		seen := map[int]bool{}
		for _, c := range v.Connectors {
			if c.ID < 1 {
				return invalid(k, "connector id must be ≥ 1")
			}
			if seen[c.ID] {
				return invalid(k, "connector %d listed twice", c.ID)
			}
			seen[c.ID] = true
			if !connectorStatuses[c.Status] {
				return invalid(k, "connector %d: unknown status %q", c.ID, c.Status)
			}
		}
		return nil
	}
	if v.Reason != "" && v.Reason != OfflineShutdown && v.Reason != OfflineLWT {
		return invalid(k, "reason must be shutdown|lwt")
	}
	return nil
}

func (v StatusMsg) validate() error {
	if v.Connector < 1 {
		return invalid(KindStatus, "connector must be ≥ 1")
	}
	if !connectorStatuses[v.Status] {
		return invalid(KindStatus, "unknown status %q", v.Status)
	}
	return nil
}

func (v MeterMsg) validate() error {
	k := KindMeter
	switch {
	case v.SessionID == "":
		return invalid(k, "session_id empty")
	case v.Connector < 1:
		return invalid(k, "connector must be ≥ 1")
	case v.Seq < 0:
		return invalid(k, "seq negative")
	case v.EnergyWh < 0:
		return invalid(k, "energy_wh negative")
	case v.PowerW < 0:
		return invalid(k, "power_w negative")
	}
	return nil
}

func (v TxnMsg) validate() error {
	k := KindTxn
	switch {
	case v.EventID == "":
		return invalid(k, "event_id empty")
	case v.SessionID == "":
		return invalid(k, "session_id empty")
	case v.Connector < 1:
		return invalid(k, "connector must be ≥ 1")
	case v.Type != TxnStarted && v.Type != TxnEnded:
		return invalid(k, "type must be started|ended")
	case v.MeterWh < 0:
		return invalid(k, "meter_wh negative")
	case v.Type == TxnEnded && v.Reason == "":
		return invalid(k, "ended without reason")
	case v.Type == TxnEnded && !endReasons[v.Reason]:
		return invalid(k, "unknown ended reason %q", v.Reason)
	}
	return nil
}

func (v AckMsg) validate() error {
	k := KindAck
	switch {
	case v.CmdID == "":
		return invalid(k, "cmd_id empty")
	case v.Result != ResultAccepted && v.Result != ResultRejected:
		return invalid(k, "result must be accepted|rejected")
	case v.Result == ResultRejected && !rejectReasons[v.Reason]:
		return invalid(k, "unknown rejected reason %q", v.Reason)
	}
	return nil
}

func (v Command) validate() error {
	k := KindCmd
	switch {
	case v.CmdID == "":
		return invalid(k, "cmd_id empty")
	case v.Type != CmdStart && v.Type != CmdStop:
		return invalid(k, "type must be start|stop")
	case v.SessionID == "":
		return invalid(k, "session_id empty")
	case v.Type == CmdStart && v.Connector < 1:
		return invalid(k, "start: connector must be ≥ 1")
	case v.Type == CmdStart && v.Deadline.IsZero():
		return invalid(k, "start: deadline missing")
	case v.MaxEnergyWh < 0:
		return invalid(k, "max_energy_wh negative")
	}
	return nil
}

func (v TxnAck) validate() error {
	if v.EventID == "" {
		return invalid(KindTxnAck, "event_id empty")
	}
	return nil
}

// Encode validates m and returns its JSON payload. Encoding an invalid
// message is a programming error on our side, reported as *InvalidError.
func Encode(m Message) ([]byte, error) {
	var err error
	switch v := m.(type) {
	case StateMsg:
		err = v.validate()
	case StatusMsg:
		err = v.validate()
	case MeterMsg:
		err = v.validate()
	case TxnMsg:
		err = v.validate()
	case AckMsg:
		err = v.validate()
	case Command:
		err = v.validate()
	case TxnAck:
		err = v.validate()
	default:
		return nil, fmt.Errorf("encode: unsupported message type %T", m)
	}
	if err != nil {
		return nil, err
	}
	return json.Marshal(m)
}
