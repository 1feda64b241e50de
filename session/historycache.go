package session

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// historyCacheSize bounds the sessions whose history the engine remembers.
const historyCacheSize = 8192

// historyCache remembers, per session, the history as it stands at one
// version, so that the view published with a commit (changeData) needs no
// read of the whole history from the store for every commit. An entry is
// keyed by the version it belongs to: a session's history at version v is
// exactly what the commits up to v appended, whoever made them, so an entry
// for the version just loaded is the stored history, and any other version
// (another instance committed since) is a miss that reads the store. Safe
// for concurrent use.
type historyCache struct {
	mu sync.Mutex
	m  map[string]historyAt
}

type historyAt struct {
	version int64
	history []fsm.HistoryEntry // never changed once stored
}

// get returns session id's history at version, if remembered.
func (c *historyCache) get(id string, version int64) ([]fsm.HistoryEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.m[id]
	if !ok || h.version != version {
		return nil, false
	}
	return h.history, true
}

// put remembers session id's history at version. When the cache is full an
// arbitrary entry makes room (a miss only costs a read).
func (c *historyCache) put(id string, version int64, history []fsm.HistoryEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]historyAt{}
	}
	if _, ok := c.m[id]; !ok && len(c.m) >= historyCacheSize {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[id] = historyAt{version: version, history: history}
}

// committed records the history after the commit of r on s (version
// s.Version+1): history when the commit was published (historyAfter read
// it), else the remembered one of s.Version, if any, with r's entries. A
// terminal session is forgotten: few commits follow.
func (c *historyCache) committed(s fsm.Session, r fsm.Result, history []fsm.HistoryEntry, published bool) {
	if r.Session.State.Terminal() {
		c.mu.Lock()
		delete(c.m, s.ID)
		c.mu.Unlock()
		return
	}
	if !published {
		h, ok := c.get(s.ID, s.Version)
		if !ok {
			return
		}
		history = append(slices.Clip(h), r.History...)
	}
	c.put(s.ID, s.Version+1, history)
}

// historyAfter returns the history of s (as loaded, at s.Version) followed
// by added: what the store will hold once the commit of version
// s.Version+1 lands.
func (e *Engine) historyAfter(ctx context.Context, s fsm.Session, added []fsm.HistoryEntry) ([]fsm.HistoryEntry, error) {
	history, ok := e.histories.get(s.ID, s.Version)
	if !ok {
		var err error
		history, err = e.store.History(ctx, s.ID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	return append(slices.Clip(history), added...), nil
}
