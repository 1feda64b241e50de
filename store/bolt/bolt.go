// Package boltstore is the embedded, durable single-node store.Store, on
// go.etcd.io/bbolt: one file, `<dir>/chargeflow.db`.
//
// Every write is one bbolt read-write transaction, so a transition, its
// history, its outbox tasks, every index it touches and its feed entry are
// committed (and fsynced) together or not at all; indexes are exact, never
// derived. bbolt admits one writer at a time, which is what makes the version
// compare-and-set exact: the loser of a race reads the winner's version.
//
// Buckets:
//
//	sessions   id → session JSON
//	history    id 0x00 be64(n) → history entry JSON
//	tasks      session 0x00 task → task JSON
//	due        be64(next ms) session 0x00 task → ""  (next = due, or lease end while leased)
//	oon        out_order_no → id
//	conn       charger 0x00 connector → id of its active session
//	idx        kind 0x00 value 0x00 SortKey → ""  (kind a=all, s=state, f=flag, c=charger)
//	idem       key → idempotency record JSON
//	done       scope 0x00 key → be64(expiry ms)
//	expiry     be64(expiry ms) kind key → ""  (the sweeper's queue)
//	chargers, tariffs   id → JSON
//	anomalies, changes  be64(seq) → JSON   (bucket sequences persist, so IDs keep increasing across restarts)
//
// The change feed is the `changes` bucket (trimmed to Options.MaxChanges)
// plus an in-process broadcast that wakes ReadChanges waiters when a write
// transaction that appended a change has committed.
//
// Goroutines: one sweeper deletes expired idempotency records and processed
// marks every Options.SweepInterval; Close stops it and waits.
package boltstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/store"
)

// FileName is the database file inside the data directory.
const FileName = "chargeflow.db"

// Options configure the store; zero values take the defaults.
type Options struct {
	// Timeout bounds the wait for the file lock (another process, or a second
	// Open in this one). Default 2s; never 0 (bbolt would wait forever).
	Timeout time.Duration
	// Now is the clock for expiries (idempotency records, processed marks).
	// Default time.Now.
	Now func() time.Time
	// MaxChanges is how many feed entries are kept. Default 50000.
	MaxChanges int
	// MaxAnomalies is how many anomalies are kept. Default 10000.
	MaxAnomalies int
	// SweepInterval is how often expired records are deleted. Default 1m.
	SweepInterval time.Duration
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxChanges <= 0 {
		o.MaxChanges = 50000
	}
	if o.MaxAnomalies <= 0 {
		o.MaxAnomalies = 10000
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

var (
	bSessions  = []byte("sessions")
	bHistory   = []byte("history")
	bTasks     = []byte("tasks")
	bDue       = []byte("due")
	bOON       = []byte("oon")
	bConn      = []byte("conn")
	bIdx       = []byte("idx")
	bIdem      = []byte("idem")
	bDone      = []byte("done")
	bExpiry    = []byte("expiry")
	bChargers  = []byte("chargers")
	bTariffs   = []byte("tariffs")
	bAnomalies = []byte("anomalies")
	bChanges   = []byte("changes")
	allBuckets = [][]byte{bSessions, bHistory, bTasks, bDue, bOON, bConn, bIdx, bIdem, bDone, bExpiry,
		bChargers, bTariffs, bAnomalies, bChanges}
)

// Store is the bbolt adapter. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	opts Options

	// mu guards changed and closed.
	mu      sync.Mutex
	changed chan struct{} // closed and replaced when changes are appended
	closed  bool

	stop chan struct{}
	wg   sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) `<dir>/chargeflow.db`. It fails after
// opts.Timeout if another process holds the file.
func Open(dir string, opts Options) (*Store, error) {
	opts.defaults()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("boltstore: data dir: %w", err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("boltstore: open %s: file is locked by another process (%w): %w", path, store.ErrUnavailable, err)
		}
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: init %s: %w", path, err)
	}
	s := &Store{db: db, opts: opts, changed: make(chan struct{}), stop: make(chan struct{})}
	s.wg.Add(1)
	go s.sweeper()
	return s, nil
}

// Close stops the sweeper, wakes ReadChanges waiters and closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	close(s.changed)
	s.mu.Unlock()
	s.wg.Wait()
	return s.db.Close()
}

// Ping checks the file is open and readable.
func (s *Store) Ping(ctx context.Context) error {
	return s.view(ctx, func(tx *bolt.Tx) error { return nil })
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.isClosed() {
		return store.ErrClosed
	}
	return mapErr(s.db.View(fn))
}

// update runs fn in a write transaction; when fn appended a change the
// waiters are woken after the commit.
func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx, w *writeState) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.isClosed() {
		return store.ErrClosed
	}
	var w writeState
	err := s.db.Update(func(tx *bolt.Tx) error {
		w = writeState{}
		return fn(tx, &w)
	})
	if err != nil {
		return mapErr(err)
	}
	if w.published {
		s.notify()
	}
	return nil
}

type writeState struct{ published bool }

func mapErr(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) || errors.Is(err, bolterrors.ErrTxClosed) {
		return fmt.Errorf("%w: %w", store.ErrClosed, err)
	}
	return err
}

func (s *Store) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// ---- keys ----

func be64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

// msKey orders int64 milliseconds as bytes (negative ones first).
func msKey(ms int64) []byte { return be64(uint64(ms) ^ (1 << 63)) }

func msFromKey(b []byte) int64 { return int64(binary.BigEndian.Uint64(b[:8]) ^ (1 << 63)) }

func join(parts ...string) []byte {
	var buf bytes.Buffer
	for i, p := range parts {
		if i > 0 {
			buf.WriteByte(0)
		}
		buf.WriteString(p)
	}
	return buf.Bytes()
}

func connKey(charger string, connector int) []byte {
	return join(charger, strconv.Itoa(connector))
}

func idxKey(kind, value, sortKey string) []byte { return join(kind, value, sortKey) }

func dueKey(ms int64, session, task string) []byte {
	return append(msKey(ms), join(session, task)...)
}

func copyBytes(b []byte) []byte { return append([]byte(nil), b...) }

// indexes lists the list-index keys of a record.
func indexes(sess fsm.Session) [][]byte {
	k := store.SortKey(sess)
	keys := [][]byte{idxKey("a", "", k), idxKey("s", string(sess.State), k), idxKey("c", sess.ChargerID, k)}
	for _, f := range sess.Flags {
		keys = append(keys, idxKey("f", string(f), k))
	}
	return keys
}

// ---- sessions ----

// taskRec is a stored outbox task.
type taskRec struct {
	Effect     fsm.Effect `json:"effect"`
	Due        int64      `json:"due"`
	Lease      string     `json:"lease,omitempty"`
	LeaseUntil int64      `json:"lease_until,omitempty"`
	Attempts   int        `json:"attempts,omitempty"`
	LastError  string     `json:"last_error,omitempty"`
}

// next is when the task next needs a look: its due time, or its lease's end.
func (t taskRec) next() int64 {
	if t.Lease != "" && t.LeaseUntil > t.Due {
		return t.LeaseUntil
	}
	return t.Due
}

func (t taskRec) task(session, id string) store.Task {
	return store.Task{ID: id, SessionID: session, Effect: t.Effect, DueAt: store.FromMillis(t.Due),
		Attempts: t.Attempts, Owner: store.LeaseOwner(t.Lease), Lease: t.Lease,
		LeaseUntil: store.FromMillis(t.LeaseUntil), LastError: t.LastError}
}

func getSession(tx *bolt.Tx, id string) (fsm.Session, error) {
	b := tx.Bucket(bSessions).Get([]byte(id))
	if b == nil {
		return fsm.Session{}, fmt.Errorf("session %s: %w", id, store.ErrNotFound)
	}
	return store.DecodeSession("sessions/"+id, b)
}

// CreateSession implements store.Store.
func (s *Store) CreateSession(ctx context.Context, c store.Commit) error {
	rec, err := store.CheckCommit(c, true)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx, w *writeState) error {
		if tx.Bucket(bSessions).Get([]byte(rec.ID)) != nil {
			return fmt.Errorf("session %s: %w", rec.ID, store.ErrExists)
		}
		if rec.State.Active() {
			ck := connKey(rec.ChargerID, rec.Connector)
			if other := tx.Bucket(bConn).Get(ck); other != nil {
				return fmt.Errorf("charger %s connector %d has session %s: %w", rec.ChargerID, rec.Connector, other, store.ErrConnectorBusy)
			}
		}
		return s.write(tx, w, nil, rec, c)
	})
}

// Commit implements store.Store.
func (s *Store) Commit(ctx context.Context, c store.Commit) error {
	rec, err := store.CheckCommit(c, false)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx, w *writeState) error {
		old, err := getSession(tx, rec.ID)
		if err != nil {
			return err
		}
		if old.Version != c.ExpectedVersion {
			return fmt.Errorf("session %s at version %d, not %d: %w", rec.ID, old.Version, c.ExpectedVersion, store.ErrVersionConflict)
		}
		return s.write(tx, w, &old, rec, c)
	})
}

// write stores rec (replacing old, nil when new) with everything it implies.
func (s *Store) write(tx *bolt.Tx, w *writeState, old *fsm.Session, rec fsm.Session, c store.Commit) error {
	data, err := store.MarshalSession(rec)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bSessions).Put([]byte(rec.ID), data); err != nil {
		return err
	}
	// indexes
	idx := tx.Bucket(bIdx)
	if old != nil {
		for _, k := range indexes(*old) {
			if err := idx.Delete(k); err != nil {
				return err
			}
		}
		if old.OutOrderNo != "" && old.OutOrderNo != rec.OutOrderNo {
			if err := tx.Bucket(bOON).Delete([]byte(old.OutOrderNo)); err != nil {
				return err
			}
		}
	}
	for _, k := range indexes(rec) {
		if err := idx.Put(k, nil); err != nil {
			return err
		}
	}
	if rec.OutOrderNo != "" {
		if err := tx.Bucket(bOON).Put([]byte(rec.OutOrderNo), []byte(rec.ID)); err != nil {
			return err
		}
	}
	conn := tx.Bucket(bConn)
	ck := connKey(rec.ChargerID, rec.Connector)
	if rec.State.Active() {
		if err := conn.Put(ck, []byte(rec.ID)); err != nil {
			return err
		}
	} else if bytes.Equal(conn.Get(ck), []byte(rec.ID)) {
		if err := conn.Delete(ck); err != nil {
			return err
		}
	}
	// history
	hist := tx.Bucket(bHistory)
	n := uint64(0)
	prefix := append([]byte(rec.ID), 0)
	cur := hist.Cursor()
	if k, _ := cur.Seek(append([]byte(rec.ID), 1)); k != nil {
		if k, _ := cur.Prev(); k != nil && bytes.HasPrefix(k, prefix) {
			n = binary.BigEndian.Uint64(k[len(prefix):]) + 1
		}
	} else if k, _ := cur.Last(); k != nil && bytes.HasPrefix(k, prefix) {
		n = binary.BigEndian.Uint64(k[len(prefix):]) + 1
	}
	for _, h := range c.History {
		b, err := json.Marshal(h)
		if err != nil {
			return err
		}
		if err := hist.Put(append(slices.Clone(prefix), be64(n)...), b); err != nil {
			return err
		}
		n++
	}
	// outbox
	tasks, due := tx.Bucket(bTasks), tx.Bucket(bDue)
	for _, e := range c.Effects {
		if e.Kind == fsm.EffDisarmTimer {
			tk := join(rec.ID, e.TimerID)
			if b := tasks.Get(tk); b != nil {
				var t taskRec
				if err := store.DecodeJSON("tasks/"+string(tk), b, &t); err != nil {
					return err
				}
				if err := due.Delete(dueKey(t.next(), rec.ID, e.TimerID)); err != nil {
					return err
				}
				if err := tasks.Delete(tk); err != nil {
					return err
				}
			}
			continue
		}
		tk := join(rec.ID, e.ID)
		if tasks.Get(tk) != nil {
			continue
		}
		t := taskRec{Effect: e, Due: store.Millis(store.TaskDue(e, rec))}
		b, err := json.Marshal(t)
		if err != nil {
			return err
		}
		if err := tasks.Put(tk, b); err != nil {
			return err
		}
		if err := due.Put(dueKey(t.next(), rec.ID, e.ID), nil); err != nil {
			return err
		}
	}
	if c.Publish {
		return s.appendChange(tx, w, store.Change{Kind: store.ChangeSession, SessionID: rec.ID, Version: rec.Version,
			ChargerID: rec.ChargerID, At: rec.UpdatedAt, Data: c.ChangeData})
	}
	return nil
}

// GetSession implements store.Store.
func (s *Store) GetSession(ctx context.Context, id string) (sess fsm.Session, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		sess, err = getSession(tx, id)
		return err
	})
	return sess, err
}

// History implements store.Store.
func (s *Store) History(ctx context.Context, id string) (out []fsm.HistoryEntry, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket(bSessions).Get([]byte(id)) == nil {
			return fmt.Errorf("session %s: %w", id, store.ErrNotFound)
		}
		prefix := append([]byte(id), 0)
		cur := tx.Bucket(bHistory).Cursor()
		for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
			var h fsm.HistoryEntry
			if err := store.DecodeJSON("history/"+id+"/"+strconv.FormatUint(binary.BigEndian.Uint64(k[len(prefix):]), 10), v, &h); err != nil {
				return err
			}
			out = append(out, h)
		}
		return nil
	})
	return out, err
}

// SessionByOutOrderNo implements store.Store.
func (s *Store) SessionByOutOrderNo(ctx context.Context, no string) (sess fsm.Session, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		id := tx.Bucket(bOON).Get([]byte(no))
		if id == nil {
			return fmt.Errorf("out_order_no %s: %w", no, store.ErrNotFound)
		}
		sess, err = getSession(tx, string(id))
		return err
	})
	return sess, err
}

// ActiveSession implements store.Store.
func (s *Store) ActiveSession(ctx context.Context, chargerID string, connector int) (sess fsm.Session, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		id := tx.Bucket(bConn).Get(connKey(chargerID, connector))
		if id == nil {
			return fmt.Errorf("active session of %s/%d: %w", chargerID, connector, store.ErrNotFound)
		}
		sess, err = getSession(tx, string(id))
		return err
	})
	return sess, err
}

// maxScan bounds the index entries one ListSessions call looks at.
const maxScan = 5000

// ListSessions implements store.Store. The most selective index given is
// scanned (state, then flag, then charger, else all); other filters are
// checked on the records.
func (s *Store) ListSessions(ctx context.Context, f store.Filter) (store.Page, error) {
	limit, err := f.PageLimit()
	if err != nil {
		return store.Page{}, err
	}
	after, err := store.DecodeCursor(f.Cursor)
	if err != nil {
		return store.Page{}, err
	}
	kind, value := f.Index()
	prefix := idxKey(kind, value, "")
	var page store.Page
	err = s.view(ctx, func(tx *bolt.Tx) error {
		page = store.Page{}
		cur := tx.Bucket(bIdx).Cursor()
		var k []byte
		if after == "" {
			// position after the last key with prefix
			end := append(slices.Clone(prefix[:len(prefix)-1]), 1)
			if k, _ = cur.Seek(end); k == nil {
				k, _ = cur.Last()
			} else {
				k, _ = cur.Prev()
			}
		} else {
			start := append(slices.Clone(prefix), after...)
			if k, _ = cur.Seek(start); k == nil {
				k, _ = cur.Last()
			} else {
				k, _ = cur.Prev()
			}
		}
		var last string
		for scanned := 0; k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Prev() {
			if len(page.Sessions) == limit || scanned == maxScan {
				// more may follow
				page.NextCursor = store.EncodeCursor(last)
				return nil
			}
			last = string(k[len(prefix):])
			scanned++
			sess, err := getSession(tx, store.SortKeyID(last))
			if errors.Is(err, store.ErrNotFound) {
				continue
			} else if err != nil {
				return err
			}
			if f.Matches(sess) {
				page.Sessions = append(page.Sessions, sess)
			}
		}
		return nil
	})
	return page, err
}

// CountByState implements store.Store.
func (s *Store) CountByState(ctx context.Context) (map[fsm.State]int, error) {
	out := map[fsm.State]int{}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		cur := tx.Bucket(bIdx).Cursor()
		for _, st := range fsm.States {
			prefix := idxKey("s", string(st), "")
			n := 0
			for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
				n++
			}
			out[st] = n
		}
		return nil
	})
	return out, err
}

// ---- outbox ----

// Claim implements store.Store.
func (s *Store) Claim(ctx context.Context, now time.Time, owner string, lease time.Duration, max int) ([]store.Task, error) {
	if max <= 0 || lease <= 0 || owner == "" {
		return nil, fmt.Errorf("%w: claim needs an owner, a lease and max > 0", store.ErrInvalid)
	}
	nowMs := store.Millis(now)
	until := store.Millis(now.Add(lease))
	var out []store.Task
	err := s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		out = nil
		tasks, due := tx.Bucket(bTasks), tx.Bucket(bDue)
		var keys [][]byte
		cur := due.Cursor()
		for k, _ := cur.First(); k != nil && len(keys) < max && msFromKey(k) <= nowMs; k, _ = cur.Next() {
			keys = append(keys, copyBytes(k))
		}
		for _, k := range keys {
			if err := due.Delete(k); err != nil {
				return err
			}
			tk := k[8:]
			b := tasks.Get(tk)
			if b == nil {
				continue // cannot happen: the index is exact
			}
			var t taskRec
			if err := store.DecodeJSON("tasks/"+string(tk), b, &t); err != nil {
				return err
			}
			sessID, taskID, _ := bytes.Cut(tk, []byte{0})
			t.Lease = store.LeaseToken(owner, randomBytes())
			t.LeaseUntil = until
			nb, err := json.Marshal(t)
			if err != nil {
				return err
			}
			if err := tasks.Put(tk, nb); err != nil {
				return err
			}
			if err := due.Put(dueKey(t.next(), string(sessID), string(taskID)), nil); err != nil {
				return err
			}
			out = append(out, t.task(string(sessID), string(taskID)))
		}
		return nil
	})
	return out, err
}

func randomBytes() []byte {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return b
}

// settle loads t under its lease and hands it to fn, with the task's bucket key.
func (s *Store) settle(ctx context.Context, t store.Task, fn func(tasks, due *bolt.Bucket, tk []byte, rec taskRec) error) error {
	return s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		tasks, due := tx.Bucket(bTasks), tx.Bucket(bDue)
		tk := join(t.SessionID, t.ID)
		b := tasks.Get(tk)
		if b == nil {
			return fmt.Errorf("task %s: %w", t.ID, store.ErrLeaseLost)
		}
		var rec taskRec
		if err := store.DecodeJSON("tasks/"+string(tk), b, &rec); err != nil {
			return err
		}
		if rec.Lease == "" || rec.Lease != t.Lease {
			return fmt.Errorf("task %s: %w", t.ID, store.ErrLeaseLost)
		}
		if err := due.Delete(dueKey(rec.next(), t.SessionID, t.ID)); err != nil {
			return err
		}
		return fn(tasks, due, tk, rec)
	})
}

// Complete implements store.Store.
func (s *Store) Complete(ctx context.Context, t store.Task) error {
	return s.settle(ctx, t, func(tasks, _ *bolt.Bucket, tk []byte, _ taskRec) error {
		return tasks.Delete(tk)
	})
}

// Retry implements store.Store.
func (s *Store) Retry(ctx context.Context, t store.Task, nextDue time.Time, errText string) error {
	return s.settle(ctx, t, func(tasks, due *bolt.Bucket, tk []byte, rec taskRec) error {
		rec.Lease, rec.LeaseUntil = "", 0
		rec.Attempts++
		rec.LastError = errText
		rec.Due = store.Millis(nextDue)
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if err := tasks.Put(tk, b); err != nil {
			return err
		}
		return due.Put(dueKey(rec.next(), t.SessionID, t.ID), nil)
	})
}

// ReleaseLeases implements store.Store in one write transaction: a task under
// a live lease has its due entry at the lease's end (after now), so only the
// entries after now are looked at.
func (s *Store) ReleaseLeases(ctx context.Context, ownerPrefix string, now time.Time) (int, error) {
	if ownerPrefix == "" {
		return 0, fmt.Errorf("%w: release leases needs an owner prefix", store.ErrInvalid)
	}
	nowMs := store.Millis(now)
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		n = 0
		tasks, due := tx.Bucket(bTasks), tx.Bucket(bDue)
		var keys [][]byte
		cur := due.Cursor()
		for k, _ := cur.Seek(msKey(nowMs + 1)); k != nil; k, _ = cur.Next() {
			keys = append(keys, copyBytes(k))
		}
		for _, k := range keys {
			tk := k[8:]
			b := tasks.Get(tk)
			if b == nil {
				continue // cannot happen: the index is exact
			}
			var t taskRec
			if err := store.DecodeJSON("tasks/"+string(tk), b, &t); err != nil {
				return err
			}
			if t.Lease == "" || t.LeaseUntil <= nowMs || !strings.HasPrefix(store.LeaseOwner(t.Lease), ownerPrefix) {
				continue
			}
			if err := due.Delete(k); err != nil {
				return err
			}
			t.Lease, t.LeaseUntil = "", 0
			t.Due = min(t.Due, nowMs)
			nb, err := json.Marshal(t)
			if err != nil {
				return err
			}
			if err := tasks.Put(tk, nb); err != nil {
				return err
			}
			sessID, taskID, _ := bytes.Cut(tk, []byte{0})
			if err := due.Put(dueKey(t.next(), string(sessID), string(taskID)), nil); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// PendingTasks implements store.Store.
func (s *Store) PendingTasks(ctx context.Context, sessionID string) (out []store.Task, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		prefix := append([]byte(sessionID), 0)
		cur := tx.Bucket(bTasks).Cursor()
		for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
			var t taskRec
			if err := store.DecodeJSON("tasks/"+string(k), v, &t); err != nil {
				return err
			}
			out = append(out, t.task(sessionID, string(k[len(prefix):])))
		}
		return nil
	})
	return out, err
}

// OutboxStats implements store.Store.
func (s *Store) OutboxStats(ctx context.Context, now time.Time) (st store.OutboxStats, err error) {
	nowMs := store.Millis(now)
	err = s.view(ctx, func(tx *bolt.Tx) error {
		st = store.OutboxStats{}
		oldest := int64(0)
		return tx.Bucket(bTasks).ForEach(func(k, v []byte) error {
			var t taskRec
			if err := store.DecodeJSON("tasks/"+string(k), v, &t); err != nil {
				return err
			}
			st.Pending++
			if t.Due <= nowMs {
				st.DueNow++
			}
			if oldest == 0 || t.Due < oldest {
				oldest = t.Due
				st.OldestDue = store.FromMillis(oldest)
			}
			return nil
		})
	})
	return st, err
}

// ---- idempotency ----

type idemRec struct {
	Hash      string `json:"h"`
	Status    int    `json:"s,omitempty"`
	Body      []byte `json:"b,omitempty"`
	SessionID string `json:"sid,omitempty"`
	Exp       int64  `json:"exp"`
}

func (r idemRec) record() store.IdemRecord {
	return store.IdemRecord{RequestHash: r.Hash, Status: r.Status, Body: r.Body, SessionID: r.SessionID, ExpiresAt: store.FromMillis(r.Exp)}
}

func expiryKey(exp int64, kind byte, key []byte) []byte {
	return append(append(msKey(exp), kind), key...)
}

// PutIdempotency implements store.Store.
func (s *Store) PutIdempotency(ctx context.Context, key, requestHash string, ttl time.Duration) (rec store.IdemRecord, created bool, err error) {
	if key == "" || ttl <= 0 {
		return rec, false, fmt.Errorf("%w: idempotency needs a key and a ttl", store.ErrInvalid)
	}
	now := s.opts.Now()
	err = s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		b := tx.Bucket(bIdem)
		if v := b.Get([]byte(key)); v != nil {
			var r idemRec
			if err := store.DecodeJSON("idem/"+key, v, &r); err != nil {
				return err
			}
			if r.Exp > store.Millis(now) {
				rec, created = r.record(), false
				return nil
			}
		}
		r := idemRec{Hash: requestHash, Exp: store.Millis(now.Add(ttl))}
		v, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(key), v); err != nil {
			return err
		}
		rec, created = r.record(), true
		return tx.Bucket(bExpiry).Put(expiryKey(r.Exp, 'i', []byte(key)), nil)
	})
	return rec, created, err
}

// SaveIdempotentResponse implements store.Store.
func (s *Store) SaveIdempotentResponse(ctx context.Context, key string, rec store.IdemRecord) error {
	now := s.opts.Now()
	return s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		b := tx.Bucket(bIdem)
		v := b.Get([]byte(key))
		if v == nil {
			return fmt.Errorf("idempotency key %s: %w", key, store.ErrNotFound)
		}
		var r idemRec
		if err := store.DecodeJSON("idem/"+key, v, &r); err != nil {
			return err
		}
		if r.Exp <= store.Millis(now) {
			return fmt.Errorf("idempotency key %s expired: %w", key, store.ErrNotFound)
		}
		if r.Hash != rec.RequestHash {
			return fmt.Errorf("idempotency key %s: other request: %w", key, store.ErrConflict)
		}
		r.Status, r.Body, r.SessionID = rec.Status, rec.Body, rec.SessionID
		nv, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), nv)
	})
}

// DeleteIdempotency implements store.Store.
func (s *Store) DeleteIdempotency(ctx context.Context, key string) error {
	return s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		return tx.Bucket(bIdem).Delete([]byte(key))
	})
}

// MarkProcessed implements store.Store.
func (s *Store) MarkProcessed(ctx context.Context, scope, key string, ttl time.Duration) (first bool, err error) {
	if key == "" || ttl <= 0 {
		return false, fmt.Errorf("%w: processed mark needs a key and a ttl", store.ErrInvalid)
	}
	now := store.Millis(s.opts.Now())
	k := join(scope, key)
	err = s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		b := tx.Bucket(bDone)
		if v := b.Get(k); len(v) == 8 && msFromKey(v) > now {
			first = false
			return nil
		}
		exp := now + ttl.Milliseconds()
		first = true
		if err := b.Put(k, msKey(exp)); err != nil {
			return err
		}
		return tx.Bucket(bExpiry).Put(expiryKey(exp, 'd', k), nil)
	})
	return first, err
}

func (s *Store) sweeper() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if n, err := s.Sweep(context.Background()); err != nil && !errors.Is(err, store.ErrClosed) {
				s.opts.Logger.Warn("boltstore: sweep expired records", "err", err)
			} else if n > 0 {
				s.opts.Logger.Debug("boltstore: swept expired records", "n", n)
			}
		}
	}
}

// Sweep deletes expired idempotency records and processed marks now (the
// sweeper does it periodically; expired records are treated as absent
// either way) and returns how many it deleted.
func (s *Store) Sweep(ctx context.Context) (n int, err error) {
	now := store.Millis(s.opts.Now())
	err = s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		n = 0
		exp, idem, done := tx.Bucket(bExpiry), tx.Bucket(bIdem), tx.Bucket(bDone)
		var keys [][]byte
		cur := exp.Cursor()
		for k, _ := cur.First(); k != nil && msFromKey(k) <= now && len(keys) < 10000; k, _ = cur.Next() {
			keys = append(keys, copyBytes(k))
		}
		for _, k := range keys {
			if err := exp.Delete(k); err != nil {
				return err
			}
			at, kind, key := msFromKey(k), k[8], k[9:]
			switch kind {
			case 'i':
				if v := idem.Get(key); v != nil {
					var r idemRec
					if json.Unmarshal(v, &r) != nil || r.Exp == at {
						if err := idem.Delete(key); err != nil {
							return err
						}
						n++
					}
				}
			case 'd':
				if v := done.Get(key); len(v) == 8 && msFromKey(v) == at {
					if err := done.Delete(key); err != nil {
						return err
					}
					n++
				}
			}
		}
		return nil
	})
	return n, err
}

// ---- chargers, tariffs ----

// PutCharger implements store.Store.
func (s *Store) PutCharger(ctx context.Context, c store.Charger) error {
	if c.ID == "" {
		return fmt.Errorf("%w: charger without id", store.ErrInvalid)
	}
	return s.putJSON(ctx, bChargers, c.ID, c)
}

// putJSON stores v as JSON under key in bucket.
func (s *Store) putJSON(ctx context.Context, bucket []byte, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		return tx.Bucket(bucket).Put([]byte(key), b)
	})
}

func getCharger(tx *bolt.Tx, id string) (store.Charger, error) {
	var c store.Charger
	v := tx.Bucket(bChargers).Get([]byte(id))
	if v == nil {
		return c, fmt.Errorf("charger %s: %w", id, store.ErrNotFound)
	}
	err := store.DecodeJSON("chargers/"+id, v, &c)
	return c, err
}

// GetCharger implements store.Store.
func (s *Store) GetCharger(ctx context.Context, id string) (c store.Charger, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		c, err = getCharger(tx, id)
		return err
	})
	return c, err
}

// ListChargers implements store.Store.
func (s *Store) ListChargers(ctx context.Context) (out []store.Charger, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		return tx.Bucket(bChargers).ForEach(func(k, v []byte) error {
			var c store.Charger
			if err := store.DecodeJSON("chargers/"+string(k), v, &c); err != nil {
				return err
			}
			out = append(out, c)
			return nil
		})
	})
	return out, err
}

// UpdateCharger implements store.Store (fn runs exactly once here).
func (s *Store) UpdateCharger(ctx context.Context, id string, fn func(c *store.Charger) ([]byte, error)) (out store.Charger, err error) {
	err = s.update(ctx, func(tx *bolt.Tx, w *writeState) error {
		c, err := getCharger(tx, id)
		if err != nil {
			return err
		}
		data, err := fn(&c)
		if err != nil {
			return err
		}
		c.ID = id
		b, err := json.Marshal(c)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bChargers).Put([]byte(id), b); err != nil {
			return err
		}
		out = c
		if data != nil {
			return s.appendChange(tx, w, store.Change{Kind: store.ChangeCharger, ChargerID: id, At: c.UpdatedAt, Data: data})
		}
		return nil
	})
	return out, err
}

// PutTariff implements store.Store.
func (s *Store) PutTariff(ctx context.Context, t money.Tariff) error {
	if t.ID == "" {
		return fmt.Errorf("%w: tariff without id", store.ErrInvalid)
	}
	return s.putJSON(ctx, bTariffs, t.ID, t)
}

// GetTariff implements store.Store.
func (s *Store) GetTariff(ctx context.Context, id string) (t money.Tariff, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bTariffs).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("tariff %s: %w", id, store.ErrNotFound)
		}
		return store.DecodeJSON("tariffs/"+id, v, &t)
	})
	return t, err
}

// ListTariffs implements store.Store.
func (s *Store) ListTariffs(ctx context.Context) (out []money.Tariff, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		return tx.Bucket(bTariffs).ForEach(func(k, v []byte) error {
			var t money.Tariff
			if err := store.DecodeJSON("tariffs/"+string(k), v, &t); err != nil {
				return err
			}
			out = append(out, t)
			return nil
		})
	})
	return out, err
}

// ---- anomalies ----

// AddAnomaly implements store.Store. IDs are the bucket's sequence, 16
// decimal digits, so they sort as they were added.
func (s *Store) AddAnomaly(ctx context.Context, a store.Anomaly) (id string, err error) {
	err = s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		b := tx.Bucket(bAnomalies)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		a.ID = fmt.Sprintf("%016d", seq)
		v, err := json.Marshal(a)
		if err != nil {
			return err
		}
		if err := b.Put(be64(seq), v); err != nil {
			return err
		}
		id = a.ID
		return trim(b, seq, s.opts.MaxAnomalies)
	})
	return id, err
}

// trim deletes the entries of a sequence bucket older than the newest max.
func trim(b *bolt.Bucket, last uint64, max int) error {
	if last <= uint64(max) {
		return nil
	}
	limit := last - uint64(max) // delete keys <= limit
	cur := b.Cursor()
	for k, _ := cur.First(); k != nil && binary.BigEndian.Uint64(k) <= limit; k, _ = cur.First() {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// ListAnomalies implements store.Store.
func (s *Store) ListAnomalies(ctx context.Context, limit int, cursor string) (p store.AnomalyPage, err error) {
	if limit <= 0 || limit > store.MaxPage {
		return p, fmt.Errorf("%w: limit %d", store.ErrInvalid, limit)
	}
	var before uint64 = 1<<64 - 1
	if cursor != "" {
		if before, err = strconv.ParseUint(cursor, 10, 64); err != nil {
			return p, fmt.Errorf("%w: bad cursor", store.ErrInvalid)
		}
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		p = store.AnomalyPage{}
		cur := tx.Bucket(bAnomalies).Cursor()
		k, v := cur.Seek(be64(before))
		if k == nil {
			k, v = cur.Last()
		}
		for ; k != nil; k, v = cur.Prev() {
			if binary.BigEndian.Uint64(k) >= before {
				continue
			}
			if len(p.Anomalies) == limit {
				p.NextCursor = p.Anomalies[limit-1].ID
				return nil
			}
			var a store.Anomaly
			if err := store.DecodeJSON("anomalies/"+strconv.FormatUint(binary.BigEndian.Uint64(k), 10), v, &a); err != nil {
				return err
			}
			p.Anomalies = append(p.Anomalies, a)
		}
		return nil
	})
	return p, err
}

// ---- the change feed ----

// appendChange adds c to the feed inside tx; waiters are woken after commit.
func (s *Store) appendChange(tx *bolt.Tx, w *writeState, c store.Change) error {
	b := tx.Bucket(bChanges)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	v, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := b.Put(be64(seq), v); err != nil {
		return err
	}
	w.published = true
	return trim(b, seq, s.opts.MaxChanges)
}

func parseChangeID(id string) (uint64, error) {
	if id == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: change id %q", store.ErrInvalid, id)
	}
	return n, nil
}

// ReadChanges implements store.Store.
func (s *Store) ReadChanges(ctx context.Context, afterID string, max int, wait time.Duration) ([]store.Change, error) {
	after, err := parseChangeID(afterID)
	if err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, fmt.Errorf("%w: max %d", store.ErrInvalid, max)
	}
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		// Take the channel before reading, so a change committed after the
		// read closes the channel we wait on.
		s.mu.Lock()
		changed, closed := s.changed, s.closed
		s.mu.Unlock()
		if closed {
			return nil, store.ErrClosed
		}
		var out []store.Change
		err := s.view(ctx, func(tx *bolt.Tx) error {
			out = nil
			cur := tx.Bucket(bChanges).Cursor()
			for k, v := cur.Seek(be64(after + 1)); k != nil && len(out) < max; k, v = cur.Next() {
				var c store.Change
				seq := binary.BigEndian.Uint64(k)
				if err := store.DecodeJSON("changes/"+strconv.FormatUint(seq, 10), v, &c); err != nil {
					return err
				}
				c.ID = strconv.FormatUint(seq, 10)
				out = append(out, c)
			}
			return nil
		})
		if err != nil || len(out) > 0 || wait <= 0 {
			return out, err
		}
		select {
		case <-changed:
		case <-timeout:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// LatestChangeID implements store.Store.
func (s *Store) LatestChangeID(ctx context.Context) (id string, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bChanges).Cursor().Last(); k != nil {
			id = strconv.FormatUint(binary.BigEndian.Uint64(k), 10)
		}
		return nil
	})
	return id, err
}
