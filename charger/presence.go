package charger

import (
	"sort"
	"sync"
	"time"
)

// PresenceState is what chargeflow knows about one charger's connection.
type PresenceState struct {
	ChargerID string
	Online    bool
	BootID    string    // of the last online state; a new one means the charger rebooted
	Reason    string    // when offline: "shutdown" or "lwt" (the will: connection lost)
	Since     time.Time // when Online last changed (receive time)
	LastHeard time.Time // receive time of the last fresh (non-retained) message of any kind
}

// PresenceChange is emitted when a charger goes online or offline, or comes
// back online with a new boot id (Reboot).
type PresenceChange struct {
	PresenceState
	Reboot bool
}

// Presence tracks online/offline per charger from the retained state topic
// and the will (docs/protocol.md §4), plus last-heard times. Feed it every
// Inbound (Observe); it is safe for concurrent use. Up messages other than
// state update LastHeard only: online-ness comes from state alone.
type Presence struct {
	now      func() time.Time
	onChange func(PresenceChange)

	mu sync.Mutex // guards m
	m  map[string]*PresenceState
}

// NewPresence returns a tracker. now is the clock used when an Inbound has
// no ReceivedAt (nil: time.Now). onChange (may be nil) is called on the
// goroutine that calls Observe, after the state was updated, never under a
// lock of the tracker; with the link's per-charger serial handler, changes
// of one charger are reported in order.
func NewPresence(now func() time.Time, onChange func(PresenceChange)) *Presence {
	if now == nil {
		now = time.Now
	}
	return &Presence{now: now, onChange: onChange, m: map[string]*PresenceState{}}
}

// Observe updates the tracker from one received message. Malformed state
// payloads count as "heard" but change nothing else.
func (p *Presence) Observe(in Inbound) {
	if in.ChargerID == "" || !ValidChargerID(in.ChargerID) {
		return
	}
	at := in.ReceivedAt
	if at.IsZero() {
		at = p.now()
	}
	var st *StateMsg
	if in.Kind == KindState {
		if m, err := Decode(KindState, in.Payload); err == nil {
			s := m.(StateMsg)
			st = &s
		}
	}

	p.mu.Lock()
	cur, known := p.m[in.ChargerID]
	if !known {
		cur = &PresenceState{ChargerID: in.ChargerID}
		p.m[in.ChargerID] = cur
	}
	if !in.Retained {
		// A retained state is old news replayed on subscribe, not a sign of life.
		cur.LastHeard = at
	}
	var change *PresenceChange
	if st != nil {
		reboot := st.Online && cur.BootID != "" && st.BootID != cur.BootID
		flipped := !known || cur.Online != st.Online
		if flipped {
			cur.Since = at
		}
		cur.Online = st.Online
		if st.Online {
			cur.BootID = st.BootID
			cur.Reason = ""
		} else {
			cur.Reason = st.Reason
		}
		if flipped || reboot {
			change = &PresenceChange{PresenceState: *cur, Reboot: reboot}
		}
	}
	p.mu.Unlock()
	if change != nil && p.onChange != nil {
		p.onChange(*change)
	}
}

// Get returns the state of one charger; ok is false if it was never heard of.
func (p *Presence) Get(chargerID string) (PresenceState, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.m[chargerID]
	if !ok {
		return PresenceState{}, false
	}
	return *s, true
}

// All returns every known charger, sorted by id.
func (p *Presence) All() []PresenceState {
	p.mu.Lock()
	out := make([]PresenceState, 0, len(p.m))
	for _, s := range p.m {
		out = append(out, *s)
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ChargerID < out[j].ChargerID })
	return out
}
