package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/chargeflow/chargeflow/charger/sim"
)

// demo plays the mini-program's backend in serve --dev so the board comes
// alive: every few seconds it starts a session on a free simulated connector
// over the real HTTP API, and stops it after a short random time. It only
// uses the public API (and the simulator's plug).
type demo struct {
	fleet *sim.Fleet
	base  string
	token string
	log   *slog.Logger
	http  http.Client
}

type demoSession struct {
	id        string
	charger   *sim.Charger
	connector int
	stopAt    time.Time
	stopped   bool
}

func (d *demo) run(ctx context.Context) {
	d.http.Timeout = 10 * time.Second
	tick := time.NewTicker(4 * time.Second)
	defer tick.Stop()
	var live []*demoSession
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		kept := live[:0]
		for _, s := range live {
			if !s.stopped && now.After(s.stopAt) {
				s.stopped = d.post(ctx, "/v1/sessions/"+s.id+"/stop", "", nil) == nil
			}
			switch d.state(ctx, s.id) {
			case "paid", "cancelled", "refunded", "completed", "deducting", "":
				continue // the car stays plugged in for the next one
			}
			kept = append(kept, s)
		}
		live = kept
		if len(live) >= 5 {
			continue
		}
		chargers := d.fleet.Chargers()
		c := chargers[rand.IntN(len(chargers))]
		conn := 1 + rand.IntN(2)
		if _, busy := c.Session(conn); busy || !c.Connected() {
			continue
		}
		_ = c.Plug(conn) // plugged at start-up; again in case someone unplugged it
		n++
		var view struct {
			ID string `json:"id"`
		}
		body := fmt.Sprintf(`{"charger_id":%q,"connector":%d,"openid":"demo-user-%d","max_amount_fen":%d}`, c.ID(), conn, n%7, 2000+rand.IntN(4)*1000)
		key := fmt.Sprintf("demo-%d-%d", now.UnixNano(), n)
		if err := d.post(ctx, "/v1/sessions", body, &view, "Idempotency-Key", key); err != nil {
			d.log.Debug("demo session not started", "charger", c.ID(), "connector", conn, "err", err)
			continue
		}
		live = append(live, &demoSession{id: view.ID, charger: c, connector: conn,
			stopAt: now.Add(time.Duration(15+rand.IntN(30)) * time.Second)})
	}
}

func (d *demo) post(ctx context.Context, path, body string, out any, headers ...string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.base+path, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+d.token)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var p struct {
			Detail string `json:"detail"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&p)
		return fmt.Errorf("%s: %d %s", path, resp.StatusCode, p.Detail)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

func (d *demo) state(ctx context.Context, id string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+"/v1/sessions/"+id, nil)
	if err != nil {
		return ""
	}
	req.Header.Set("Authorization", "Bearer "+d.token)
	resp, err := d.http.Do(req)
	if err != nil {
		return "unknown"
	}
	defer resp.Body.Close()
	var v struct {
		State string `json:"state"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil {
		return ""
	}
	return v.State
}
