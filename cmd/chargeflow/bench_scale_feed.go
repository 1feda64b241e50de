package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// scaleFeed follows the child's change feed (GET /v1/events, the SSE stream
// the board reads): which chargers are online, which sessions charge, and
// when each meter sample the fleet published became visible in the store —
// the session's live.last_meter_wh reaching the sample's register. It
// reconnects with the last event id it saw, so the restart loses nothing.
type scaleFeed struct {
	api *scaleAPI
	hc  *http.Client // the API's transport, without its timeout: the stream stays open

	events    atomic.Int64 // changes read (one per commit that has a feed entry)
	connected atomic.Bool  // the stream answered once

	mu       sync.Mutex
	online   map[string]bool
	onlineN  int
	state    map[string]string // session → state
	charging int
	sent     map[scaleMeterKey]time.Time // samples published and not seen stored yet
	record   bool                        // samples are timed (the measured window)
	lat      []time.Duration             // meter published → visible on the feed
	lastID   string
	readErrs int
}

type scaleMeterKey struct {
	session string
	wh      int64
}

func newScaleFeed(api *scaleAPI) *scaleFeed {
	return &scaleFeed{api: api, hc: &http.Client{Transport: api.hc.Transport}, online: map[string]bool{}, state: map[string]string{}, sent: map[scaleMeterKey]time.Time{}}
}

// meterSent is the fleet's onMeter: a sample is timed while recording.
func (f *scaleFeed) meterSent(session string, wh int64, at time.Time) {
	f.mu.Lock()
	if f.record {
		f.sent[scaleMeterKey{session, wh}] = at
	}
	f.mu.Unlock()
}

// setRecord starts or stops timing samples.
func (f *scaleFeed) setRecord(on bool) {
	f.mu.Lock()
	f.record = on
	f.mu.Unlock()
}

// run reads the feed until ctx ends, reconnecting after every error.
func (f *scaleFeed) run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := f.read(ctx); err != nil && ctx.Err() == nil {
			f.mu.Lock()
			f.readErrs++
			f.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (f *scaleFeed) read(ctx context.Context) error {
	f.mu.Lock()
	after := f.lastID
	f.mu.Unlock()
	u := f.api.base + "/v1/events"
	if after != "" {
		u += "?last_event_id=" + url.QueryEscape(after)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+f.api.opToken)
	resp, err := f.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &url.Error{Op: "GET", URL: u, Err: errStatus(resp.Status)}
	}
	f.connected.Store(true)
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	var id, kind string
	var data []byte
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A long data line: read the rest of it.
			rest, err2 := r.ReadString('\n')
			line, err = append(append([]byte(nil), line...), rest...), err2
		}
		if err != nil {
			return err
		}
		s := strings.TrimRight(string(line), "\r\n")
		switch {
		case s == "":
			if id != "" && data != nil {
				f.change(id, kind, data)
			}
			id, kind, data = "", "", nil
		case strings.HasPrefix(s, "id: "):
			id = s[4:]
		case strings.HasPrefix(s, "event: "):
			kind = s[7:]
		case strings.HasPrefix(s, "data: "):
			data = append(data, s[6:]...)
		}
	}
}

type errStatus string

func (e errStatus) Error() string { return string(e) }

// change applies one feed event.
func (f *scaleFeed) change(id, kind string, data []byte) {
	now := time.Now()
	f.events.Add(1)
	var v struct {
		ID     string `json:"id"`
		Online bool   `json:"online"`
		State  string `json:"state"`
		Live   *struct {
			LastMeterWh int64 `json:"last_meter_wh"`
		} `json:"live"`
	}
	err := json.Unmarshal(data, &v)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastID = id
	if err != nil {
		return
	}
	switch kind {
	case "charger":
		if was := f.online[v.ID]; was != v.Online {
			f.online[v.ID] = v.Online
			if v.Online {
				f.onlineN++
			} else {
				f.onlineN--
			}
		}
	case "session":
		if was := f.state[v.ID]; was != v.State {
			if was == "charging" {
				f.charging--
			}
			if v.State == "charging" {
				f.charging++
			}
			f.state[v.ID] = v.State
		}
		if v.Live != nil {
			k := scaleMeterKey{v.ID, v.Live.LastMeterWh}
			if at, ok := f.sent[k]; ok {
				f.lat = append(f.lat, now.Sub(at))
				delete(f.sent, k)
			}
		}
	}
}

// counts returns chargers online and sessions charging.
func (f *scaleFeed) counts() (online, charging int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.onlineN, f.charging
}

// onlineIDs returns the ids that are online, in the order of ids.
func (f *scaleFeed) onlineIDs(ids []string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var on []string
	for _, id := range ids {
		if f.online[id] {
			on = append(on, id)
		}
	}
	return on
}

// latencies returns the timed samples seen stored so far and how many
// timed samples were not seen yet.
func (f *scaleFeed) latencies() ([]time.Duration, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.lat...), len(f.sent)
}

// waitFor polls cond every 20 ms until it holds, the deadline passes
// (false) or ctx ends.
func waitFor(ctx context.Context, limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
