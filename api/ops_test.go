package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
)

// probingStore is a store that can tell whether it can commit, like the
// Redis adapter.
type probingStore struct {
	store.Store
	err      error
	deadline time.Duration // how much time the probe was given
}

func (p *probingStore) ProbeCommit(ctx context.Context) error {
	if d, ok := ctx.Deadline(); ok {
		p.deadline = time.Until(d)
	}
	return p.err
}

// /readyz asks a store that can tell whether it can commit, with a short
// deadline, and says not ready while it cannot.
func TestReadyzProbesCommits(t *testing.T) {
	st := newStack(t)
	ps := &probingStore{Store: st.store}
	d := st.deps(st.eng)
	d.Store = ps
	base := st.serve(d)
	st.mustStatus(t, req{base: base, method: "GET", path: "/readyz"}, http.StatusOK)
	if ps.deadline <= 0 || ps.deadline > commitProbeTimeout {
		t.Fatalf("probe given %s, want at most %s", ps.deadline, commitProbeTimeout)
	}
	ps.err = errors.New("store unavailable: CLUSTERDOWN The cluster is down (10.0.0.7:7001)")
	r := st.do(t, req{base: base, method: "GET", path: "/readyz"})
	if p := r.problem(t); r.status != http.StatusServiceUnavailable || p.Code != session.CodeUnavailable || strings.Contains(string(r.body), "10.0.0.7") {
		t.Fatalf("readyz while the store cannot commit: %d %s", r.status, r.body)
	}
	if !strings.Contains(st.logText(), "store cannot commit") {
		t.Fatal("the cause is not logged")
	}
	ps.err = nil
	st.mustStatus(t, req{base: base, method: "GET", path: "/readyz"}, http.StatusOK)
	// Deps.Ready failing is not ready whatever the probe says.
	d.Ready = readyErr(errors.New("broker: not connected"))
	st.mustStatus(t, req{base: st.serve(d), method: "GET", path: "/readyz"}, http.StatusServiceUnavailable)
}
