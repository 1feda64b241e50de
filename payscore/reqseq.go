package payscore

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// Step names a request that carries a req_seq_id.
type Step string

// The steps with a req_seq_id (docs/payscore.md §4). Each code is two capital letters.
const (
	StepCreate   Step = "CR" // create service order
	StepRegister Step = "RG" // register deduction
	StepDebit    Step = "DB" // payscorepay
	StepRefund   Step = "RF" // refund
)

// maxReqSeqLen is the length we allow ourselves (Huifu's limit is at least this).
const maxReqSeqLen = 64

// Attempt is one dated send of a logical attempt: Huifu takes a req_seq_id
// only with the req_date of the day it is sent, and refuses a req_date that
// is not its today (docs/payscore.md §3, the midnight rule). So a logical
// attempt has one Attempt per Beijing day: re-sent the same day it is the
// same request (same bytes); re-sent on a later day it is a new request,
// which the caller may send only after a query showed the earlier day's
// attempt did not execute.
type Attempt struct {
	ReqDate  string // yyyyMMdd, Beijing time: the day it is sent
	ReqSeqID string
}

// AttemptOn is the Attempt of logical attempt n of step of a session sent
// at t (its Beijing day).
func AttemptOn(sessionID string, step Step, n int, t time.Time) Attempt {
	d := FormatDate(t)
	return Attempt{ReqDate: d, ReqSeqID: ReqSeqID(sessionID, step, n, d)}
}

// ReqSeqID returns the req_seq_id of one logical attempt of a step of a
// session sent on reqDate (yyyyMMdd). The same inputs always give the same
// id, so a request re-sent after a crash or a timeout on the same day is
// recognisable as the same request; different inputs give different ids —
// the same attempt sent on two days has two ids, so Huifu never sees one id
// with two dates. The result is [A-Za-z0-9] and at most 64 chars.
//
// attempt numbers LOGICAL attempts (a new debit after a failed one, the n-th
// refund), never transport retries: Call re-sends the same id by itself.
//
// Layout: step (2 letters) + attempt (4 digits) + reqDate (8 digits) +
// sessionID, which is injective because the first 14 characters have a
// fixed width. A sessionID that is not alphanumeric or longer than 50
// characters, an attempt outside 0..9999 or a reqDate that is not 8 digits
// is hashed instead: step + "ZZ" + 40 hex digits of SHA-256 — "ZZ" never
// occurs where the direct form has digits.
func ReqSeqID(sessionID string, step Step, attempt int, reqDate string) string {
	const head = 2 + 4 + 8
	if attempt >= 0 && attempt <= 9999 && len(reqDate) == 8 && digits(reqDate) && len(sessionID) > 0 &&
		len(sessionID) <= maxReqSeqLen-head && alnum(sessionID) && alnum(string(step)) && len(step) == 2 {
		return fmt.Sprintf("%s%04d%s%s", step, attempt, reqDate, sessionID)
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%d\x00%s\x00%s\x00%s", attempt, step, reqDate, sessionID)))
	prefix := string(step)
	if len(prefix) != 2 || !alnum(prefix) {
		prefix = "XX"
	}
	return prefix + "ZZ" + hex.EncodeToString(sum[:20])
}

// SessionOf returns the session id named by a req_seq_id of ReqSeqID's
// direct form, or "" for any other serial (a hashed id, Huifu's own serial
// of a user's payment): a notification without out_order_no can still be
// applied by the req_seq_id it echoes.
func SessionOf(reqSeqID string) string {
	const head = 2 + 4 + 8
	if len(reqSeqID) <= head || !alnum(reqSeqID) || !digits(reqSeqID[2:head]) {
		return ""
	}
	switch Step(reqSeqID[:2]) {
	case StepCreate, StepRegister, StepDebit, StepRefund:
		return reqSeqID[head:]
	}
	return ""
}

func alnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
