// Package sandbox is Huifu — and WeChat behind it — for development and
// tests: it speaks the wire profile (docs/payscore.md) with its own RSA keys, verifies requests
// the way Huifu does (canonicalising whatever keys arrive), signs replies,
// implements the Pay Score service-order state machine and the rules of
// docs/payscore.md §6, keeps a ledger of money collected and refunded, and sends
// signed notifications with Huifu's retry behaviour.
//
// A control API plays the WeChat user (confirm, refuse, pay by themselves)
// and injects faults; it exists as Go methods (for tests) and over HTTP under
// /_sandbox/ (for `chargeflow sandbox`).
//
// With Options.StateFile the sandbox survives a restart: orders, payments,
// the replay cache and its generated keys are kept in that file (state.go).
//
// All methods are safe for concurrent use. Goroutines (notification
// deliveries, automatic confirmations) are owned by the Sandbox and stopped
// by Close.
package sandbox

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
)

// Options configures a Sandbox. The zero value works: keys are generated and
// any sys_id / product_id / huifu_id is accepted.
type Options struct {
	// HuifuPrivateKey is the sandbox's signing key (PKCS#8, base64 or PEM);
	// generated (RSA-2048) when empty.
	HuifuPrivateKey string
	// MerchantPublicKey is the merchant key requests must be signed with
	// (PKIX, base64 or PEM). When empty a merchant key pair is generated and
	// MerchantPrivateKey returns its private half, so dev mode needs no
	// configuration.
	MerchantPublicKey string

	// When set, requests must carry these identities (else 10000000/22000002).
	SysID, ProductID, HuifuID string
	// ServiceID, when set, is the only Pay Score service_id create accepts
	// (another one, or none, is refused with 10000000 as WeChat refuses a
	// service id the merchant does not own). ClientConfig configures it.
	ServiceID string

	// Now is the sandbox's clock (default time.Now). Rules such as
	// end_time ≤ call time and the 24 h registration life read it.
	Now func() time.Time

	NotifyRetries int           // re-sends after the first delivery; default 3 (Huifu's)
	NotifyBackoff time.Duration // first wait before a re-send, doubled each time; default 5s
	NotifyTimeout time.Duration // per delivery; default 5s (Huifu's)
	NotifyClient  *http.Client  // default: a plain client

	// AllowCancelAfterComplete lets cancel succeed on DOING/MCH_COMPLETE while
	// no deduction registration is live (WeChat sources disagree, docs/payscore.md §6).
	AllowCancelAfterComplete bool
	// RejectDuplicates answers 20000000 to every repeated req_seq_id. By
	// default a repeat with the same data replays the first reply (and one
	// with other data gets 20000000).
	RejectDuplicates bool
	// AutoConfirm, when positive, confirms every new order after this delay
	// (as a simulated user would); chargeflow serve --dev uses it.
	AutoConfirm time.Duration
	// RegistrationTTL is how long a deduction registration lives; default 24h.
	RegistrationTTL time.Duration

	// StateFile, when set, makes the sandbox durable: New loads the file if
	// it exists (an unreadable or corrupt file is an error naming it, never
	// a silent fresh start) and the whole state is rewritten atomically
	// after every change, so a restarted sandbox still knows every order,
	// registration, payment and refund, its seq counter, the request replay
	// cache and the key pairs it generated (see state.go for what is not
	// kept). Its directory is created if missing. Empty: memory only.
	StateFile string

	Logger *slog.Logger
}

// Sandbox is a running sandbox. Create it with New, serve Handler, and Close
// it when done.
type Sandbox struct {
	opts     Options
	now      func() time.Time
	signer   payscore.Signer
	verifier payscore.Verifier
	log      *slog.Logger
	notifier *http.Client
	mux      *http.ServeMux

	huifuPub, merchantPriv, merchantPub string
	huifuPriv                           string // generated (or loaded) Huifu key, for the state file; "" when given

	ctx    context.Context // cancelled by Close: stops goroutines and hung replies
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex // guards everything below
	closed      bool
	seq         int
	orders      map[string]*order // by out_order_no
	byHfSeq     map[string]*order // by create's hf_seq_id
	byCreateReq map[string]*order // by create's req_seq_id
	regsByReq   map[string]*registration
	regsByHf    map[string]*registration
	payments    map[string]*payment // by req_date + "/" + hf_seq_id
	seen        map[string]*seenRequest
	faults      map[string][]FaultKind
	failDebits  int
	lose        int
	duplicate   bool
	autoConfirm time.Duration
	deliveries  []*Delivery
	billEdits   map[string][]BillEdit // by day (bill.go)
	billsHeld   bool
	style       ReplyStyle           // how query replies are written (replystyle.go)
	inspect     func(string, []byte) // sees each verified request's data (Inspect)
}

// New starts a sandbox.
func New(opts Options) (*Sandbox, error) {
	s := &Sandbox{opts: opts, now: opts.Now, log: opts.Logger, notifier: opts.NotifyClient}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.notifier == nil {
		s.notifier = &http.Client{}
	}
	if s.opts.NotifyRetries == 0 {
		s.opts.NotifyRetries = 3
	}
	if s.opts.NotifyBackoff <= 0 {
		s.opts.NotifyBackoff = 5 * time.Second
	}
	if s.opts.NotifyTimeout <= 0 {
		s.opts.NotifyTimeout = 5 * time.Second
	}
	if s.opts.RegistrationTTL <= 0 {
		s.opts.RegistrationTTL = 24 * time.Hour
	}
	s.autoConfirm = opts.AutoConfirm

	var st *stateFile
	var err error
	if opts.StateFile != "" {
		if st, err = readState(opts.StateFile); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(opts.StateFile), 0o700); err != nil {
			return nil, fmt.Errorf("sandbox: state file %s: %w", opts.StateFile, err)
		}
	}

	var huifuKey *rsa.PrivateKey
	switch {
	case opts.HuifuPrivateKey != "":
		if huifuKey, err = payscore.LoadPrivateKey(opts.HuifuPrivateKey); err != nil {
			return nil, fmt.Errorf("sandbox: huifu key: %w", err)
		}
	case st != nil && st.HuifuPrivateKey != "":
		if huifuKey, err = payscore.LoadPrivateKey(st.HuifuPrivateKey); err != nil {
			return nil, fmt.Errorf("sandbox: state file %s: huifu key: %w", opts.StateFile, err)
		}
		s.huifuPriv = st.HuifuPrivateKey
	default:
		if huifuKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return nil, fmt.Errorf("sandbox: generate huifu key: %w", err)
		}
		if s.huifuPriv, err = payscore.EncodePrivateKey(huifuKey); err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
	}
	if s.huifuPub, err = payscore.EncodePublicKey(&huifuKey.PublicKey); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	s.signer = payscore.NewRSASigner(huifuKey)

	var merchantPub *rsa.PublicKey
	if opts.MerchantPublicKey != "" {
		if merchantPub, err = payscore.LoadPublicKey(opts.MerchantPublicKey); err != nil {
			return nil, fmt.Errorf("sandbox: merchant key: %w", err)
		}
	} else if st != nil && st.MerchantPrivateKey != "" {
		mk, err := payscore.LoadPrivateKey(st.MerchantPrivateKey)
		if err != nil {
			return nil, fmt.Errorf("sandbox: state file %s: merchant key: %w", opts.StateFile, err)
		}
		s.merchantPriv = st.MerchantPrivateKey
		merchantPub = &mk.PublicKey
	} else {
		mk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("sandbox: generate merchant key: %w", err)
		}
		if s.merchantPriv, err = payscore.EncodePrivateKey(mk); err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
		merchantPub = &mk.PublicKey
	}
	if s.merchantPub, err = payscore.EncodePublicKey(merchantPub); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	s.verifier = payscore.NewRSAVerifier(merchantPub)

	s.orders = map[string]*order{}
	s.byHfSeq = map[string]*order{}
	s.byCreateReq = map[string]*order{}
	s.regsByReq = map[string]*registration{}
	s.regsByHf = map[string]*registration{}
	s.payments = map[string]*payment{}
	s.seen = map[string]*seenRequest{}
	s.faults = map[string][]FaultKind{}
	if st != nil {
		if err := s.restore(st); err != nil {
			return nil, fmt.Errorf("sandbox: state file %s: %w", opts.StateFile, err)
		}
	}
	// Write at once: the keys of a fresh sandbox must survive a restart even
	// when no order was created.
	if err := s.trySaveLocked(); err != nil {
		return nil, fmt.Errorf("sandbox: state file %s: %w", opts.StateFile, err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mux = s.routes()
	s.mu.Lock()
	s.rearmAutoConfirmLocked()
	s.mu.Unlock()
	return s, nil
}

// Close stops every goroutine the sandbox started (pending notifications are
// abandoned, hung replies released) and waits for them. It does not close
// the HTTP server serving Handler: its owner does.
func (s *Sandbox) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// Handler serves the Huifu API paths and the control API under /_sandbox/.
func (s *Sandbox) Handler() http.Handler { return s.mux }

// PublicKey is Huifu's (the sandbox's) public key, base64 PKIX: chargeflow's
// Verifier key.
func (s *Sandbox) PublicKey() string { return s.huifuPub }

// MerchantPrivateKey is the generated merchant private key (base64 PKCS#8):
// chargeflow's Signer key. Empty when Options.MerchantPublicKey was given.
func (s *Sandbox) MerchantPrivateKey() string { return s.merchantPriv }

// MerchantPublicKey is the merchant public key the sandbox trusts.
func (s *Sandbox) MerchantPublicKey() string { return s.merchantPub }

// ClientConfig returns a payscore.Config for baseURL (where Handler is
// served) with the generated merchant key and the sandbox's public key.
// The caller sets NotifyURL and tuning. It fails when the merchant key was
// given from outside (the sandbox then does not know its private half).
func (s *Sandbox) ClientConfig(baseURL string) (payscore.Config, error) {
	if s.merchantPriv == "" {
		return payscore.Config{}, fmt.Errorf("sandbox: merchant private key unknown (given from outside)")
	}
	priv, err := payscore.LoadPrivateKey(s.merchantPriv)
	if err != nil {
		return payscore.Config{}, err
	}
	pub, err := payscore.LoadPublicKey(s.huifuPub)
	if err != nil {
		return payscore.Config{}, err
	}
	return payscore.Config{
		BaseURL:   baseURL,
		SysID:     firstNonEmpty(s.opts.SysID, defaultSysID),
		ProductID: firstNonEmpty(s.opts.ProductID, defaultProductID),
		HuifuID:   firstNonEmpty(s.opts.HuifuID, defaultHuifuID),
		ServiceID: firstNonEmpty(s.opts.ServiceID, DefaultServiceID),
		Signer:    payscore.NewRSASigner(priv),
		Verifier:  payscore.NewRSAVerifier(pub),
	}, nil
}

// FaultKind is a fault injected into the next request(s) of a path.
type FaultKind string

// Faults. The first three happen before the request is executed, the others
// after: those are the "may have executed" cases a client must settle by
// query.
const (
	Fault5xx          FaultKind = "5xx"           // answer 503, not executed
	FaultTimeout      FaultKind = "timeout"       // hang until the client gives up, not executed
	FaultSystemError  FaultKind = "system_error"  // signed resp_code 99999999, not executed
	FaultExecuted5xx  FaultKind = "executed_5xx"  // execute, then answer 502
	FaultLostReply    FaultKind = "lost_reply"    // execute, then hang: the reply never arrives
	FaultUnsigned     FaultKind = "unsigned"      // execute, reply without sign
	FaultBadSignature FaultKind = "bad_signature" // execute, reply with a wrong sign
	// FaultRefuse answers a signed business refusal (resp_code 90000000,
	// risk control), not executed: what WeChat says to a user it will not
	// serve.
	FaultRefuse FaultKind = "refuse"
	// FaultChannelBusy answers a signed 91111119 (通道异常，请稍后重试), not
	// executed: transient, to be retried.
	FaultChannelBusy FaultKind = "channel_busy"
	// FaultUnknownCode executes, then answers a signed resp_code no profile
	// knows: the client must take it as uncertain and settle by query.
	FaultUnknownCode FaultKind = "unknown_code"
)

func (k FaultKind) valid() bool {
	switch k {
	case Fault5xx, FaultTimeout, FaultSystemError, FaultExecuted5xx, FaultLostReply, FaultUnsigned, FaultBadSignature, FaultRefuse,
		FaultChannelBusy, FaultUnknownCode:
		return true
	}
	return false
}

// FailNext makes the next n requests to path (e.g. payscore.PathDebit) fail
// with kind. Faults queue up in order.
func (s *Sandbox) FailNext(path string, n int, kind FaultKind) error {
	if !kind.valid() {
		return fmt.Errorf("sandbox: unknown fault kind %q", kind)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults[path] = append(s.faults[path], kind)
	}
	return nil
}

// FailDebits makes the next n debits fail the way real ones do: silently.
// The debit is accepted (P), the order stays DOING/MCH_COMPLETE unpaid, the
// registration is spent and shows trans_stat F; no notification is sent.
// Calls add up; FailDebits(0) clears what is left.
func (s *Sandbox) FailDebits(n int) {
	s.mu.Lock()
	s.failDebits = max(s.failDebits+n, 0)
	if n <= 0 {
		s.failDebits = 0 // FailDebits(0) clears what is left
	}
	s.mu.Unlock()
}

// LoseNotifications drops the next n notifications entirely (no delivery
// attempt at all), so the client must find the facts by query. Calls add
// up; LoseNotifications(0) clears what is left.
func (s *Sandbox) LoseNotifications(n int) {
	s.mu.Lock()
	s.lose = max(s.lose+n, 0)
	if n <= 0 {
		s.lose = 0 // LoseNotifications(0) clears what is left
	}
	s.mu.Unlock()
}

// DuplicateNotifications makes every notification delivered once more after
// it was acknowledged, as Huifu sometimes does.
func (s *Sandbox) DuplicateNotifications(on bool) {
	s.mu.Lock()
	s.duplicate = on
	s.mu.Unlock()
}

// AutoConfirm sets the automatic confirmation delay for orders created from
// now on (0 = off).
func (s *Sandbox) AutoConfirm(delay time.Duration) {
	s.mu.Lock()
	s.autoConfirm = delay
	s.mu.Unlock()
}

// LedgerEntry is the money of one service order, in fen.
type LedgerEntry struct {
	OutOrderNo string    `json:"out_order_no"`
	Collected  money.Fen `json:"collected_fen"`
	Refunded   money.Fen `json:"refunded_fen"`
}

// Ledger returns money collected and refunded per out_order_no (orders with
// no money movement are left out).
func (s *Sandbox) Ledger() map[string]LedgerEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]LedgerEntry{}
	for no, o := range s.orders {
		var e LedgerEntry
		for _, p := range o.payments {
			e.Collected += p.Amount
			e.Refunded += p.Refunded
		}
		if e.Collected != 0 || e.Refunded != 0 {
			e.OutOrderNo = no
			out[no] = e
		}
	}
	return out
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
