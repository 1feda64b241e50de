package payscore

// Replies are read tolerantly (docs/payscore.md §3): Huifu's field types are
// not all documented, so an amount may come as integer fen, as a string of
// fen or as a yuan string ("12.30"); an object- or array-valued field may
// come as a JSON string holding it or as the JSON value itself; a number may
// come where a string is expected; unknown fields are ignored. What still
// cannot be read is ErrUnreadableReply: an anomaly to record, never a reason
// to ask again (asking again gets the same reply).

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/chargeflow/chargeflow/money"
)

// ErrUnreadableReply: a verified, successful reply carries a field chargeflow
// relies on in a form it cannot read. Classify calls it Final: the same query
// would get the same answer, so the caller records an anomaly instead of
// settling by query again.
var ErrUnreadableReply = errors.New("payscore: unreadable reply")

// wireFields is a reply's data (or a nested object of it), read tolerantly.
type wireFields map[string]json.RawMessage

// str reads a string; a number or boolean gives its JSON text.
func (f wireFields) str(k string) string {
	raw := trimRaw(f[k])
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
		return ""
	}
	if raw[0] == '{' || raw[0] == '[' {
		return ""
	}
	return string(raw)
}

// amountUnit is what an integer amount counts in a field.
type amountUnit int

const (
	inFen  amountUnit = iota // WeChat's fields (collection, total_amount [decided])
	inYuan                   // Huifu's own top-level fields (ord_amt, trans_amt)
)

// amount reads an amount field: an integer (number or string) counts in the
// field's unit; a decimal ("12.30", "12.3", 12.3) is always yuan. Absent is
// 0. Anything else is an error naming the field.
func (f wireFields) amount(k string, u amountUnit) (money.Fen, error) {
	s := strings.TrimSpace(f.str(k))
	if s == "" {
		if raw := trimRaw(f[k]); len(raw) > 0 && (raw[0] == '{' || raw[0] == '[') {
			return 0, fmt.Errorf("%s: not an amount: %s", k, raw)
		}
		return 0, nil
	}
	return parseAmount(k, s, u)
}

func parseAmount(k, s string, u amountUnit) (money.Fen, error) {
	neg := strings.HasPrefix(s, "-")
	body := strings.TrimPrefix(s, "-")
	var v money.Fen
	switch {
	case strings.Contains(body, "."):
		y, err := money.ParseYuan(body)
		if err != nil {
			return 0, fmt.Errorf("%s: not an amount: %q", k, s)
		}
		v = y
	default:
		n, err := strconv.ParseInt(body, 10, 64)
		if err != nil || body == "" || body[0] == '+' {
			return 0, fmt.Errorf("%s: not an amount: %q", k, s)
		}
		v = money.Fen(n)
		if u == inYuan {
			v *= 100
		}
	}
	if neg {
		v = -v
	}
	return v, nil
}

// integer reads a small integer sent as a number or a string; absent is 0.
func (f wireFields) integer(k string) (int, error) {
	s := strings.TrimSpace(f.str(k))
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%s: not an integer: %q", k, s)
	}
	return n, nil
}

// nested returns the JSON value of an object- or array-valued field sent as
// a JSON string holding it or as the value itself; nil when absent, null or
// "".
func (f wireFields) nested(k string) (json.RawMessage, error) {
	raw := trimRaw(f[k])
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		raw = trimRaw(json.RawMessage(s))
		if len(raw) == 0 || string(raw) == "null" {
			return nil, nil
		}
	}
	return raw, nil
}

// object reads an object-valued field (see nested); nil when absent.
func (f wireFields) object(k string) (wireFields, error) {
	raw, err := f.nested(k)
	if err != nil || raw == nil {
		return nil, err
	}
	var o wireFields
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, fmt.Errorf("%s: not an object: %w", k, err)
	}
	return o, nil
}

// list reads an array of objects (see nested); nil when absent.
func (f wireFields) list(k string) ([]wireFields, error) {
	raw, err := f.nested(k)
	if err != nil || raw == nil {
		return nil, err
	}
	var l []wireFields
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, fmt.Errorf("%s: not a list of objects: %w", k, err)
	}
	return l, nil
}

func trimRaw(raw json.RawMessage) json.RawMessage {
	return json.RawMessage(strings.TrimSpace(string(raw)))
}

// readCollection reads the query reply's collection (docs/payscore.md §4
// [decided: a JSON string; an object is tolerated]); absent means none yet.
func readCollection(f wireFields) (Collection, error) {
	var c Collection
	o, err := f.object(fieldCollection)
	if err != nil || o == nil {
		return c, err
	}
	c.State = o.str("state")
	for _, a := range []struct {
		k   string
		dst *money.Fen
	}{{"total_amount", &c.TotalAmount}, {"paying_amount", &c.PayingAmount}, {"paid_amount", &c.PaidAmount}} {
		if *a.dst, err = o.amount(a.k, inFen); err != nil {
			return c, fmt.Errorf("collection.%w", err)
		}
	}
	details, err := o.list("details")
	if err != nil {
		return c, fmt.Errorf("collection.%w", err)
	}
	for _, d := range details {
		var cd CollectionDetail
		if cd.Seq, err = d.integer("seq"); err != nil {
			return c, fmt.Errorf("collection.details.%w", err)
		}
		if cd.Amount, err = d.amount("amount", inFen); err != nil {
			return c, fmt.Errorf("collection.details.%w", err)
		}
		cd.PaidType, cd.PaidTime, cd.TransactionID = d.str("paid_type"), d.str("paid_time"), d.str("transaction_id")
		c.Details = append(c.Details, cd)
	}
	return c, nil
}
