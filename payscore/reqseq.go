package payscore

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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

// ReqSeqID returns the req_seq_id of one logical attempt of a step of a
// session. The same inputs always give the same id, so a request re-sent
// after a crash or a timeout is recognisable as the same request; different
// inputs give different ids. The result is [A-Za-z0-9] and at most 64 chars.
//
// attempt numbers LOGICAL attempts (a new debit after a failed one, the n-th
// refund), never transport retries: Call re-sends the same id by itself.
//
// Layout: step (2 letters) + attempt (4 digits) + sessionID, which is
// injective because the first 6 characters have a fixed width. A sessionID
// that is not alphanumeric or longer than 58 characters, or an attempt
// outside 0..9999, is hashed instead: step + "ZZ" + 40 hex digits of
// SHA-256 — "ZZ" never occurs where the direct form has digits.
//
// Huifu wants req_seq_id unique per huifu_id per DAY: the caller must send
// each attempt with the req_date of the day it was first sent (keep it with
// the attempt), so a retry after midnight is still the same request.
func ReqSeqID(sessionID string, step Step, attempt int) string {
	if attempt >= 0 && attempt <= 9999 && len(sessionID) > 0 && len(sessionID) <= maxReqSeqLen-6 && alnum(sessionID) && alnum(string(step)) && len(step) == 2 {
		return fmt.Sprintf("%s%04d%s", step, attempt, sessionID)
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%d\x00%s\x00%s", attempt, step, sessionID)))
	prefix := string(step)
	if len(prefix) != 2 || !alnum(prefix) {
		prefix = "XX"
	}
	return prefix + "ZZ" + hex.EncodeToString(sum[:20])
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
