// Package boltstore is the embedded, durable single-node store.Store, on
// go.etcd.io/bbolt: one file, `<dir>/chargeflow.db`.
//
// Every write is made inside one bbolt read-write transaction, so a
// transition, its history, its outbox tasks, every index it touches and its
// feed entry are committed (and fsynced) together or not at all; indexes are
// exact, never derived. bbolt admits one writer at a time, which is what
// makes the version compare-and-set exact: the loser of a race reads the
// winner's version.
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
//	whdel, whpend, whq, whdue, whlog, whfail   the webhook deliveries (webhooks.go)
//
// The change feed is the `changes` bucket (trimmed to Options.MaxChanges)
// plus an in-process broadcast that wakes ReadChanges waiters when a write
// transaction that appended a change has committed.
//
// Writes of concurrent callers share transactions (group commit, write.go):
// each call still returns only once its write is fsynced, and a call refused
// by its own checks is answered alone, as if it had run alone.
//
// Goroutines: the writer runs every write transaction (write.go); one
// sweeper deletes expired idempotency records and processed marks every
// Options.SweepInterval; Close stops both and waits.
//
// Files: bolt.go holds the options, opening, read transactions and key
// encodings; write.go the writer and its group commit; sessions.go the
// creation, the commit and the session reads and lists; outbox.go claims,
// settling and leases; webhooks.go the webhook deliveries; idempotency.go
// the Idempotency-Key records, processed marks and their sweeper;
// registry.go chargers, tariffs and anomalies; feed.go the change feed.
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/chargeflow/chargeflow/fsm"
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
	// MaxBatch is how many concurrent writes at most share one transaction
	// and its fsync (write.go). Default 256; 1 commits every write alone.
	MaxBatch int
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
	if o.MaxBatch <= 0 {
		o.MaxBatch = 256
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
		bChargers, bTariffs, bAnomalies, bChanges, bWhDel, bWhPend, bWhQ, bWhDue, bWhLog, bWhFail}
)

// Store is the bbolt adapter. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	opts Options

	// mu guards changed, closed and queue; wake (on mu) tells the writer
	// that queue has calls or the store closed.
	mu      sync.Mutex
	changed chan struct{} // closed and replaced when changes are appended
	closed  bool
	queue   []*writeCall // writes waiting for the writer goroutine
	wake    *sync.Cond

	writes, commits atomic.Uint64 // WriteStats
	rollbacks       atomic.Uint64 // batches run again without a failed call (write.go)
	waiting         atomic.Int64  // calls handed to the writer, not yet answered
	written         written       // the records written last, for the next commit (written.go)

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
	s.wake = sync.NewCond(&s.mu)
	s.wg.Add(2)
	go s.writer()
	go s.sweeper()
	return s, nil
}

// Close refuses new writes, lets the writer commit those already accepted,
// stops the sweeper, wakes ReadChanges waiters and closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	close(s.changed)
	s.wake.Broadcast()
	s.mu.Unlock()
	s.wg.Wait()
	return s.db.Close()
}

// Ping checks the file is open and readable.
func (s *Store) Ping(ctx context.Context) error {
	return s.view(ctx, func(tx *bolt.Tx) error { return nil })
}

// Durable implements store.Store: every commit is fsynced before it
// returns, and there is no replica to promote, so a commit made is durable.
func (s *Store) Durable(ctx context.Context, sessionID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.isClosed() {
		return store.ErrClosed
	}
	return nil
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

// writeState is what one run of a write's function did besides writing.
type writeState struct {
	published bool
	written   []writtenPut // records written, remembered once committed (written.go)
}

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
