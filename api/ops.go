package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/session"
)

// readyTimeout bounds the readiness check.
const readyTimeout = 3 * time.Second

// commitProbeTimeout bounds the store's commit probe: a primary that takes
// longer to acknowledge one small write is not serving commits. It fits in
// a Kubernetes probe's default timeout (1 s) with Deps.Ready's checks.
const commitProbeTimeout = 800 * time.Millisecond

// commitProber is a store that can show cheaply that it can commit now (the
// Redis adapter writes a health key on every primary, so a primary down or
// being failed over shows; see redisstore.Store.ProbeCommit).
type commitProber interface {
	ProbeCommit(ctx context.Context) error
}

// handleHealthz: the process is up and serving.
func (s *server) handleHealthz() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "ok\n")
	}
}

// handleReadyz: the store, the broker and the payment configuration are
// usable (Deps.Ready), and the store can commit now when it can tell
// (commitProber): while a Redis primary is down or being failed over the
// instance is not ready, and it is again once commits go through
// (docs/operations.md). Not ready → 503 problem; the cause is logged, not
// shown.
func (s *server) handleReadyz() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		err := s.ready(ctx)
		if p, ok := s.store.(commitProber); ok && err == nil {
			pctx, cancel := context.WithTimeout(ctx, commitProbeTimeout)
			if perr := p.ProbeCommit(pctx); perr != nil {
				err = fmt.Errorf("store cannot commit: %w", perr)
			}
			cancel()
		}
		if err != nil {
			loggerFrom(r).Warn("not ready", "err", err)
			Error(w, r, session.Errorf(session.CodeUnavailable, "not ready"))
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "ready\n")
	}
}

// handleOpenAPI serves the API's OpenAPI 3.1 document.
func (s *server) handleOpenAPI() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeRaw(w, http.StatusOK, s.openapi)
	}
}

// handleNotify: Huifu's notifications (docs/payscore.md §5), through
// payscore.NotifyHandler: capped body, signature verified over the raw
// resp_data before anything is parsed (401 and nothing applied otherwise),
// then Engine.HandleNotification (idempotent), then the exact
// RECV_ORD_ID_<req_seq_id> acknowledgement.
func (s *server) handleNotify() http.HandlerFunc {
	h := payscore.NotifyHandler(s.verifier, s.eng.HandleNotification,
		payscore.NotifyOptions{MaxBodyBytes: s.maxBody, Logger: s.log.With("component", "payscore-notify")})
	return h.ServeHTTP
}
