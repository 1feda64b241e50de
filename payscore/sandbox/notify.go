package sandbox

import (
	"context"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/chargeflow/chargeflow/payscore"
)

// Delivery is the record of one notification, for tests and the control API.
type Delivery struct {
	Kind       string `json:"kind"` // user_confirmed or payment_succeeded
	URL        string `json:"url"`
	ReqSeqID   string `json:"req_seq_id"`
	OutOrderNo string `json:"out_order_no"`
	Duplicate  bool   `json:"duplicate,omitempty"` // an extra copy sent after an acknowledgement
	Lost       bool   `json:"lost,omitempty"`      // dropped by LoseNotifications: never sent
	Attempts   int    `json:"attempts"`            // POSTs made so far
	Acked      bool   `json:"acked"`               // answered 200 with exactly RECV_ORD_ID_<req_seq_id>
	Done       bool   `json:"done"`                // no further attempt will be made
	LastStatus int    `json:"last_status,omitempty"`
}

// Deliveries returns a copy of every notification record so far, in order.
func (s *Sandbox) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Delivery, len(s.deliveries))
	for i, d := range s.deliveries {
		out[i] = *d
	}
	return out
}

// goLocked starts a goroutine owned by the sandbox. s.mu must be held; after
// Close nothing starts.
func (s *Sandbox) goLocked(f func()) {
	if s.closed {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// sendLocked queues notes for delivery (s.mu held), applying the lose and
// duplicate faults.
func (s *Sandbox) sendLocked(notes []note) {
	for _, n := range notes {
		d := &Delivery{Kind: n.kind, URL: n.url, ReqSeqID: n.reqSeqID, OutOrderNo: n.outOrderNo}
		s.deliveries = append(s.deliveries, d)
		if s.lose > 0 {
			s.lose--
			d.Lost, d.Done = true, true
			continue
		}
		respData, err := payscore.CanonicalJSON(n.fields)
		if err != nil {
			d.Done = true
			continue
		}
		dup := s.duplicate
		s.goLocked(func() {
			if s.deliver(d, string(respData)) && dup {
				s.mu.Lock()
				d2 := &Delivery{Kind: d.Kind, URL: d.URL, ReqSeqID: d.ReqSeqID, OutOrderNo: d.OutOrderNo, Duplicate: true}
				s.deliveries = append(s.deliveries, d2)
				s.mu.Unlock()
				s.deliver(d2, string(respData))
			}
		})
	}
}

// deliver posts the signed form until it gets exactly the acknowledgement,
// at most 1 + NotifyRetries times with doubling back-off; it reports whether
// it was acknowledged.
func (s *Sandbox) deliver(d *Delivery, respData string) bool {
	form, err := payscore.SignNotification(s.signer, respData)
	if err != nil {
		s.mu.Lock()
		d.Done = true
		s.mu.Unlock()
		return false
	}
	// Huifu's form posts also carry resp_code/resp_desc beside resp_data;
	// receivers must ignore them, so send them.
	form.Set("resp_code", payscore.CodeSuccess)
	form.Set("resp_desc", "成功")
	body := form.Encode()
	want := payscore.AckPrefix + d.ReqSeqID
	wait := s.opts.NotifyBackoff
	for attempt := 0; attempt <= s.opts.NotifyRetries; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(wait)
			select {
			case <-s.ctx.Done():
				t.Stop()
				return false
			case <-t.C:
			}
			wait *= 2
		}
		status, acked := s.post(d.URL, body, want)
		s.mu.Lock()
		d.Attempts++
		d.LastStatus = status
		d.Acked = acked
		d.Done = acked || attempt == s.opts.NotifyRetries
		s.mu.Unlock()
		if acked {
			return true
		}
	}
	return false
}

func (s *Sandbox) post(url, body, want string) (status int, acked bool) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.NotifyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, false
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := s.notifier.Do(req)
	if err != nil {
		s.log.Debug("sandbox notification failed", "url", url, "error", err)
		return 0, false
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return resp.StatusCode, resp.StatusCode == http.StatusOK && string(got) == want
}

// autoConfirmAfter confirms the order after delay, as a simulated user.
func (s *Sandbox) autoConfirmAfter(outOrderNo string, delay time.Duration) {
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-s.ctx.Done():
	case <-t.C:
		if err := s.Confirm(outOrderNo); err != nil {
			s.log.Debug("sandbox auto-confirm skipped", "out_order_no", outOrderNo, "error", err)
		}
	}
}
