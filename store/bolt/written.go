package boltstore

import (
	"crypto/sha256"
	"encoding/json"
	"sync"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// Keeping JSON out of the writer. Every write runs on the one writer
// goroutine (write.go), so whatever a commit does inside its transaction
// is done one commit after another. A commit used to decode the stored
// record (for its version and its old index keys) and encode the new one
// and its history there: three quarters of the writer's CPU in a burst of
// 1,000 confirmations (docs/bench.md "Burst"). Now the new record and its
// history are encoded by the caller before the write is queued
// (encodeCommit), and the old record's version and keys come from what
// this store wrote last for that session (written), used only when the
// stored bytes are exactly the bytes it wrote (their SHA-256); anything
// else — a record written before Open, by a restore, or a write whose
// transaction did not commit — is decoded as before.

// prevRec is what a commit needs of the record it replaces.
type prevRec struct {
	version    int64
	outOrderNo string
	idx        [][]byte // indexes(record)
}

func prevOf(s fsm.Session) prevRec {
	return prevRec{version: s.Version, outOrderNo: s.OutOrderNo, idx: indexes(s)}
}

// writtenEntry is one record this store wrote: its bytes' digest and what a
// later commit needs of it.
type writtenEntry struct {
	sum  [sha256.Size]byte
	prev prevRec
}

// writtenMax bounds the sessions remembered (a few hundred bytes each); one
// forgotten is decoded at its next commit.
const writtenMax = 16384

// written remembers, per session, the record this store wrote last.
type written struct {
	mu sync.Mutex
	m  map[string]writtenEntry
}

// lookup returns what is remembered of session id when stored — the bytes
// in the sessions bucket — are the bytes remembered.
func (w *written) lookup(id string, stored []byte) (prevRec, bool) {
	w.mu.Lock()
	e, ok := w.m[id]
	w.mu.Unlock()
	if !ok || sha256.Sum256(stored) != e.sum {
		return prevRec{}, false
	}
	return e.prev, true
}

// writtenPut is a record a write made, remembered once its transaction
// committed: a transaction rolled back and run again (write.go) must not
// leave an entry the stored bytes do not match (it would only cost a
// decode, but on every run of a batch run again).
type writtenPut struct {
	id   string
	sum  [sha256.Size]byte
	prev prevRec
}

// put remembers records of a committed transaction.
func (w *written) put(puts []writtenPut) {
	if len(puts) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = make(map[string]writtenEntry)
	}
	for _, p := range puts {
		if _, ok := w.m[p.id]; !ok && len(w.m) >= writtenMax {
			for k := range w.m { // one arbitrary entry
				delete(w.m, k)
				break
			}
		}
		w.m[p.id] = writtenEntry{sum: p.sum, prev: p.prev}
	}
}

// encodedCommit is a commit's JSON, encoded before its write is queued.
type encodedCommit struct {
	data    []byte
	sum     [sha256.Size]byte
	history [][]byte
}

func encodeCommit(rec fsm.Session, c store.Commit) (*encodedCommit, error) {
	data, err := store.MarshalSession(rec)
	if err != nil {
		return nil, err
	}
	enc := &encodedCommit{data: data, sum: sha256.Sum256(data), history: make([][]byte, len(c.History))}
	for i, h := range c.History {
		if enc.history[i], err = json.Marshal(h); err != nil {
			return nil, err
		}
	}
	return enc, nil
}
