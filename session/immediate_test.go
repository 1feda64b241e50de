package session_test

import (
	"context"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

// TestImmediateWindowFull: with a window of one commit, a second
// confirmation while the first one's start is still held on the immediate
// path commits without a lease, and the workers' claim path sends its start;
// the held one is sent once released. Each start goes out once.
func TestImmediateWindowFull(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		h := newHarness(t, st, func(c *session.Config) { c.ImmediateWindow = 1; c.IdleWait = 10 * time.Millisecond })
		granted, release := make(chan []store.Task, 4), make(chan struct{})
		session.SetAfterLeasedCommit(h.eng, func(g []store.Task) bool {
			granted <- g
			<-release
			return true
		})
		ctx, cancel := context.WithCancel(bg)
		done := make(chan struct{})
		go func() { defer close(done); _ = h.eng.Run(ctx) }()
		defer func() { cancel(); <-done }()
		released := false
		defer func() {
			if !released {
				close(release)
			}
		}()

		first := h.created("CP-1")
		if err := h.sb.Confirm(first.OutOrderNo); err != nil {
			t.Fatal(err)
		}
		select {
		case g := <-granted:
			if len(g) == 0 || g[0].SessionID != first.ID {
				t.Fatalf("granted %+v, want the start of %s", g, first.ID)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("the first confirmation was granted nothing")
		}

		second := h.created("CP-2")
		if err := h.sb.Confirm(second.OutOrderNo); err != nil {
			t.Fatal(err)
		}
		waitSent(t, h, second.ID)
		select {
		case g := <-granted:
			t.Fatalf("a full window granted %+v", g)
		default:
		}
		if n := len(h.cmd.sent(first.ID, "start")); n != 0 {
			t.Fatalf("the held start was sent %d times", n)
		}

		close(release)
		released = true
		waitSent(t, h, first.ID)
		for _, id := range []string{first.ID, second.ID} {
			if n := len(h.cmd.sent(id, "start")); n != 1 {
				t.Errorf("session %s: %d starts sent", id, n)
			}
		}
	})
}

// waitSent waits, generously, for session id's start to be published.
func waitSent(t *testing.T, h *harness, id string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for len(h.cmd.sent(id, "start")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no start sent for %s", id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
