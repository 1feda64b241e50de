// Package payscore is chargeflow's Huifu client for WeChat Pay Score
// (confirmation mode): everything where money leaves the building.
//
// It follows the wire profile of docs/payscore.md (§1–§8). Its
// shape:
//
//   - Signer / Verifier: SHA256WithRSA over the canonical data (sign.go).
//   - Client.Call: the one choke point — envelope, signing, per-attempt
//     timeout, reply verification, the retry policy, logging and the
//     Observer hook (client.go). Typed methods for the eight endpoints sit
//     on top of it (endpoints.go).
//   - profile.go: paths, codes, states and every [decided] item of the
//     profile, in one place.
//   - Errors: *Error with IsUncertain / IsRetryable, and the WeChat error
//     helpers (errors.go). An uncertain error is settled by a query, never
//     by re-issuing the step under a new req_seq_id.
//   - ReqSeqID: deterministic request serials per (session, step, attempt).
//   - Notifications: VerifyNotification and NotifyHandler (notify.go).
//
// Amounts are money.Fen; yuan strings exist only on the wire. Times are
// time.Time; they become Beijing-time strings only on the wire.
//
// The sandbox (package payscore/sandbox) plays Huifu and WeChat for
// development and tests; package payscoretest helps other packages' tests.
package payscore
