package api

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/chargeflow/chargeflow/store"
)

// sseBatch is how many changes one read of the feed takes.
const sseBatch = 256

// sseRetryMillis is the reconnection delay suggested to EventSource clients.
const sseRetryMillis = 2000

// handleEvents: GET /v1/events, Server-Sent Events of the change feed.
//
// Each change is one event: `id:` the change's ID (increasing), `event:`
// its kind (session, charger), `data:` its JSON view (what GET
// /v1/sessions/{id} or /v1/chargers/{id} would answer at that moment). A
// client that reconnects with Last-Event-ID (or ?last_event_id=) gets every
// change after it, without gaps, as long as the store still retains it.
// Without either, the stream starts with what happens from now on.
//
// The feed is read from the store by this request's goroutine, at its own
// pace: a slow client holds nobody up. A `: ping` comment is sent when
// nothing else was for Heartbeat. The stream ends when the client goes or
// the request's context ends (the server shutting down cancels it, given a
// BaseContext it cancels). The connection's write deadline is cleared, so a
// server-wide WriteTimeout does not cut the stream.
func (s *server) handleEvents() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		after := r.Header.Get("Last-Event-ID")
		if after == "" {
			after = r.URL.Query().Get("last_event_id")
		}
		if after == "" {
			latest, err := s.store.LatestChangeID(ctx)
			if err != nil {
				Error(w, r, err)
				return
			}
			after = latest
		}
		// The first read does not wait, and checks the ID before the stream
		// starts: an ID the store never issued is the client's error.
		batch, err := s.store.ReadChanges(ctx, after, sseBatch, 0)
		if err != nil {
			Error(w, r, storeArg(err, "Last-Event-ID"))
			return
		}

		rc := http.NewResponseController(w)
		if err := rc.SetWriteDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
			loggerFrom(r).Warn("sse: clear write deadline", "err", err)
		}
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
		w.WriteHeader(http.StatusOK)

		bw := bufio.NewWriter(w)
		flush := func() bool {
			if err := bw.Flush(); err != nil {
				return false
			}
			return rc.Flush() == nil
		}
		bw.WriteString("retry: ")
		bw.WriteString(strconv.Itoa(sseRetryMillis))
		bw.WriteString("\n\n")
		if !flush() {
			return
		}
		lastWrite := time.Now()
		for {
			for _, c := range batch {
				writeEvent(bw, c)
				after = c.ID
			}
			wrote := len(batch) > 0
			if !wrote && time.Since(lastWrite) >= s.heartbeat {
				bw.WriteString(": ping\n\n")
				wrote = true
			}
			if wrote {
				if !flush() {
					return // the client is gone
				}
				lastWrite = time.Now()
			}
			if ctx.Err() != nil {
				return
			}
			wait := max(s.heartbeat-time.Since(lastWrite), time.Millisecond)
			batch, err = s.store.ReadChanges(ctx, after, sseBatch, wait)
			if err != nil {
				if ctx.Err() == nil {
					// The client reconnects with Last-Event-ID and loses nothing.
					loggerFrom(r).Warn("sse: read changes", "err", err, "after", after)
				}
				return
			}
		}
	}
}

// writeEvent writes one change as an SSE event.
func writeEvent(bw *bufio.Writer, c store.Change) {
	bw.WriteString("id: ")
	bw.WriteString(c.ID)
	bw.WriteString("\nevent: ")
	bw.WriteString(string(c.Kind))
	bw.WriteByte('\n')
	data := c.Data
	if len(data) == 0 {
		data = []byte("null")
	}
	for line := range bytes.Lines(data) {
		bw.WriteString("data: ")
		bw.Write(bytes.TrimRight(line, "\r\n"))
		bw.WriteByte('\n')
	}
	bw.WriteByte('\n')
}
