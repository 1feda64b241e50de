package payscore_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

// TestTransientFaultsAreRetried: faults that happen before Huifu executes
// anything are retried inside Call with the same signed body.
func TestTransientFaultsAreRetried(t *testing.T) {
	for _, kind := range []sandbox.FaultKind{sandbox.Fault5xx, sandbox.FaultTimeout, sandbox.FaultSystemError} {
		t.Run(string(kind), func(t *testing.T) {
			e := newEnv(t, withTimeout(200*time.Millisecond))
			e.sb.FailNext(payscore.PathCreateOrder, 1, kind)
			res := e.create(t, "tf"+string(kind[:2]), 500)
			if res.OutOrderNo == "" || len(e.sb.Orders()) != 1 {
				t.Fatalf("create: %+v, %d orders", res, len(e.sb.Orders()))
			}
			if n := e.calls.sends(payscore.PathCreateOrder); n != 2 {
				t.Fatalf("%d attempts", n)
			}
		})
	}
}

// TestExhaustedRetriesAreUncertain: when every attempt failed in a way that
// may have executed, the error says so, and a query settles it.
func TestExhaustedRetriesAreUncertain(t *testing.T) {
	e := newEnv(t, withSends(3))
	e.sb.FailNext(payscore.PathCreateOrder, 3, sandbox.Fault5xx)
	req := e.createReq("ex1", 500)
	_, err := e.client.CreateOrder(bg, req)
	var pe *payscore.Error
	if !payscore.IsUncertain(err) || !payscore.IsRetryable(err) || !errors.As(err, &pe) || pe.HTTPStatus != 503 || pe.Sends != 3 {
		t.Fatalf("got %v", err)
	}
	// Settle by query: not there, so the same request (same id) is re-sent.
	if _, err := e.client.QueryOrder(bg, payscore.OrderLocator{ReqSeqID: req.ReqSeqID}); !payscore.IsOrderNotExist(err) {
		t.Fatalf("query: %v", err)
	}
	if _, err := e.client.CreateOrder(bg, req); err != nil {
		t.Fatal(err)
	}
}

// TestExecutedButReplyLost: the request ran; the retry (same id, same body)
// gets the first reply again, so there is still one order.
func TestExecutedButReplyLost(t *testing.T) {
	e := newEnv(t, withTimeout(150*time.Millisecond))
	e.sb.FailNext(payscore.PathCreateOrder, 1, sandbox.FaultLostReply)
	res := e.create(t, "lost1", 500)
	if len(e.sb.Orders()) != 1 || res.OutOrderNo != e.sb.Orders()[0] {
		t.Fatalf("orders %v, reply %+v", e.sb.Orders(), res)
	}

	// Same for a debit answered by a 502 after it ran: one payment only.
	no := e.completed(t, "lost2", 700)
	reg := e.register(t, "lost2", 1, no)
	e.sb.FailNext(payscore.PathDebit, 1, sandbox.FaultExecuted5xx)
	if _, err := e.client.Debit(bg, e.debitReq("lost2", 1, reg)); err != nil {
		t.Fatal(err)
	}
	e.waitNotification(t, payscore.KindPaymentSucceeded, no, 1)
	if led := e.sb.Ledger()[no]; led.Collected != 700 {
		t.Fatalf("ledger %+v", led)
	}
}

// TestRefusalAfterPossibleExecutionIsUncertain: complete answered 502 after
// it ran; the retry is refused ("already completed"), which must not read as
// a failure of the complete.
func TestRefusalAfterPossibleExecutionIsUncertain(t *testing.T) {
	for _, attempts := range []int{1, 3} {
		e := newEnv(t, withSends(attempts))
		no := e.confirmed(t, "unc", 1000)
		e.sb.FailNext(payscore.PathCompleteOrder, 1, sandbox.FaultExecuted5xx)
		err := e.client.CompleteOrder(bg, e.completeReq(no, 500))
		if !payscore.IsUncertain(err) {
			t.Fatalf("attempts %d: got %v", attempts, err)
		}
		if attempts == 3 && !payscore.IsInvalidOrderState(err) {
			t.Fatalf("the retry's refusal should be visible: %v", err)
		}
		if o := e.query(t, no); !o.Completed() || o.TotalAmount != 500 {
			t.Fatalf("query settles it: %+v", o)
		}
	}
}

// TestUnverifiableRepliesAreNeverSuccess: a reply without or with a wrong
// signature is not believed, and the call is uncertain.
func TestUnverifiableRepliesAreNeverSuccess(t *testing.T) {
	for kind, sentinel := range map[sandbox.FaultKind]error{sandbox.FaultUnsigned: payscore.ErrNotSigned, sandbox.FaultBadSignature: payscore.ErrNoValidSignature} {
		e := newEnv(t)
		e.sb.FailNext(payscore.PathCreateOrder, 1, kind)
		_, err := e.client.CreateOrder(bg, e.createReq("sig", 500))
		if !errors.Is(err, sentinel) || !payscore.IsUncertain(err) {
			t.Fatalf("%s: got %v", kind, err)
		}
		// It did run: the query finds it, and a re-send replays it.
		if _, err := e.client.QueryOrder(bg, payscore.OrderLocator{ReqSeqID: payscore.ReqSeqID("sig", payscore.StepCreate, 1, payscore.FormatDate(e.clock.Now()))}); err != nil {
			t.Fatalf("%s: query: %v", kind, err)
		}
	}
}

func TestNothingSentIsNotUncertain(t *testing.T) {
	e := newEnv(t)
	cfg, _ := e.sb.ClientConfig("http://127.0.0.1:1") // nothing listens on port 1
	cfg.RetryBackoff, cfg.MaxSends = time.Millisecond, 2
	c, err := payscore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.QueryOrder(bg, payscore.OrderLocator{OutOrderNo: "x"})
	if !payscore.IsRetryable(err) || payscore.IsUncertain(err) {
		t.Fatalf("got %v", err)
	}
}

func TestCallerCancelDuringHangIsUncertain(t *testing.T) {
	e := newEnv(t)
	e.sb.FailNext(payscore.PathCreateOrder, 1, sandbox.FaultTimeout)
	ctx, cancel := context.WithCancel(bg)
	time.AfterFunc(50*time.Millisecond, cancel) // the sandbox hangs until the caller gives up
	_, err := e.client.CreateOrder(ctx, e.createReq("cc", 500))
	if !payscore.IsUncertain(err) || !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

// TestSilentDebitFailure: the debit is accepted, nothing is notified, the
// order stays unpaid and the registration shows F; a new registration and
// debit then succeed.
func TestSilentDebitFailure(t *testing.T) {
	e := newEnv(t)
	no := e.completed(t, "sdf", 900)
	e.sb.FailDebits(1)
	reg := e.register(t, "sdf", 1, no)
	d, err := e.client.Debit(bg, e.debitReq("sdf", 1, reg))
	if err != nil || d.TransStat != payscore.TransProcessing {
		t.Fatalf("debit: %+v %v", d, err)
	}
	if o := e.query(t, no); !o.Completed() || o.Collection.State != payscore.CollectionUserPaying {
		t.Fatalf("after failed debit: %+v", o)
	}
	if ds, _ := e.client.QueryDeduction(bg, payscore.OrderLocator{OutOrderNo: no}); ds.TransStat != payscore.TransFailed {
		t.Fatalf("deduction: %+v", ds)
	}
	reg2 := e.register(t, "sdf", 2, no)
	if _, err := e.client.Debit(bg, e.debitReq("sdf", 2, reg2)); err != nil {
		t.Fatal(err)
	}
	e.waitNotification(t, payscore.KindPaymentSucceeded, no, 1)
	if !e.query(t, no).Paid() || e.sb.Ledger()[no].Collected != 900 {
		t.Fatal("second debit did not pay")
	}
	for _, d := range e.waitDelivered(t) {
		if d.Kind == string(payscore.KindPaymentSucceeded) && d.ReqSeqID != payscore.ReqSeqID("sdf", payscore.StepDebit, 2, payscore.FormatDate(e.clock.Now())) {
			t.Fatalf("the failed debit was notified: %+v", d)
		}
	}
}

func TestLostNotificationIsFoundByQuery(t *testing.T) {
	e := newEnv(t)
	e.sb.LoseNotifications(1)
	no := e.confirmed(t, "lostn", 500)
	ds := e.waitDelivered(t)
	if len(ds) != 1 || !ds[0].Lost || ds[0].Attempts != 0 {
		t.Fatalf("deliveries %+v", ds)
	}
	if len(e.notifications()) != 0 {
		t.Fatal("a lost notification arrived")
	}
	if !e.query(t, no).UserConfirmed() {
		t.Fatal("query does not show the confirmation")
	}
}

func TestDuplicateNotifications(t *testing.T) {
	e := newEnv(t)
	e.sb.DuplicateNotifications(true)
	no := e.confirmed(t, "dupn", 500)
	a := e.waitNotification(t, payscore.KindUserConfirmed, no, 1)
	b := e.waitNotification(t, payscore.KindUserConfirmed, no, 2)
	if a.Raw != b.Raw {
		t.Fatal("duplicate differs")
	}
	ds := e.waitDelivered(t)
	if len(ds) != 2 || !ds[0].Acked || !ds[1].Acked || !ds[1].Duplicate {
		t.Fatalf("deliveries %+v", ds)
	}
}

// TestNotificationRetriedUntilExactAck: Huifu re-sends (up to 3 more times)
// until the body is exactly RECV_ORD_ID_<req_seq_id>.
func TestNotificationRetriedUntilExactAck(t *testing.T) {
	t.Run("apply fails once", func(t *testing.T) {
		e := newEnv(t)
		e.applyErr = errors.New("store down")
		no := e.confirmed(t, "ack1", 500)
		e.waitNotification(t, payscore.KindUserConfirmed, no, 1)
		ds := e.waitDelivered(t)
		if len(ds) != 1 || ds[0].Attempts != 2 || !ds[0].Acked {
			t.Fatalf("deliveries %+v", ds)
		}
	})
	t.Run("wrong acknowledgement", func(t *testing.T) {
		e := newEnv(t)
		e.ackMode = "wrong"
		e.confirmed(t, "ack2", 500)
		ds := e.waitDelivered(t)
		if len(ds) != 1 || ds[0].Attempts != 4 || ds[0].Acked || ds[0].LastStatus != http.StatusOK {
			t.Fatalf("deliveries %+v", ds)
		}
	})
}

func TestObserverSeesEveryAttempt(t *testing.T) {
	e := newEnv(t, withSends(3))
	e.sb.FailNext(payscore.PathQueryOrder, 1, sandbox.FaultSystemError)
	e.client.QueryOrder(bg, payscore.OrderLocator{OutOrderNo: "none"})
	e.calls.mu.Lock()
	defer e.calls.mu.Unlock()
	if len(e.calls.infos) != 2 {
		t.Fatalf("infos %+v", e.calls.infos)
	}
	first, second := e.calls.infos[0], e.calls.infos[1]
	if first.Result != payscore.CodeSystemError || first.Final || second.Result != payscore.CodeNotFound || !second.Final || second.Send != 2 {
		t.Fatalf("infos %+v", e.calls.infos)
	}
}

// A business refusal (risk control) is final: neither retried nor uncertain,
// and nothing was created.
func TestRefusalIsFinal(t *testing.T) {
	e := newEnv(t)
	if err := e.sb.FailNext(payscore.PathCreateOrder, 1, sandbox.FaultRefuse); err != nil {
		t.Fatal(err)
	}
	_, err := e.client.CreateOrder(bg, e.createReq("refused1", 5000))
	if err == nil || payscore.IsRetryable(err) || payscore.IsUncertain(err) {
		t.Fatalf("got %v, want a final refusal", err)
	}
	if n := len(e.sb.Orders()); n != 0 {
		t.Fatalf("%d orders created", n)
	}
}
