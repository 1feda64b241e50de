package boltstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// taskRec is a stored outbox task.
type taskRec struct {
	Effect     fsm.Effect `json:"effect"`
	Due        int64      `json:"due"`
	Lease      string     `json:"lease,omitempty"`
	LeaseUntil int64      `json:"lease_until,omitempty"`
	Tries      int        `json:"attempts,omitempty"` // failed tries (the JSON name of earlier versions)
	LastError  string     `json:"last_error,omitempty"`
}

// next is when the task next needs a look: its due time, or its lease's end.
func (t taskRec) next() int64 {
	if t.Lease != "" && t.LeaseUntil > t.Due {
		return t.LeaseUntil
	}
	return t.Due
}

// leaseAdded leases a task a commit adds when the commit asks for it
// (store.CommitLease): its due entry then sits at the lease's end, as a
// claimed task's does.
func leaseAdded(t *taskRec, sessionID string, l *store.CommitLease) {
	due := store.FromMillis(t.Due)
	if !l.LeaseFor(t.Effect, due) {
		return
	}
	t.Lease, t.LeaseUntil = l.Token, store.Millis(l.Until)
	l.Grant(sessionID, t.Effect, due)
}

// leaseOutcome forgets the grants of a commit that failed.
func leaseOutcome(l *store.CommitLease, err error) error {
	if err != nil && l != nil {
		l.Granted = nil
	}
	return err
}

func (t taskRec) task(session, id string) store.Task {
	return store.Task{ID: id, SessionID: session, Effect: t.Effect, DueAt: store.FromMillis(t.Due),
		Tries: t.Tries, Owner: store.LeaseOwner(t.Lease), Lease: t.Lease,
		LeaseUntil: store.FromMillis(t.LeaseUntil), LastError: t.LastError}
}

// Claim implements store.Store.
func (s *Store) Claim(ctx context.Context, now time.Time, owner string, lease time.Duration, max int) ([]store.Task, error) {
	if max <= 0 || lease <= 0 || owner == "" {
		return nil, fmt.Errorf("%w: claim needs an owner, a lease and max > 0", store.ErrInvalid)
	}
	nowMs := store.Millis(now)
	if due, err := s.anyDue(ctx, bDue, nowMs); err != nil || !due {
		return nil, err
	}
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

// anyDue says whether the due index of bucket has an entry at or before
// nowMs: a read, so workers polling an outbox with nothing due write (and
// fsync) nothing. A task that falls due after the read is claimed by the
// next poll, as it would be had the poll come a moment earlier.
func (s *Store) anyDue(ctx context.Context, bucket []byte, nowMs int64) (due bool, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucket).Cursor().First()
		due = k != nil && msFromKey(k) <= nowMs
		return nil
	})
	return due, err
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
			return refuse(fmt.Errorf("task %s: %w", t.ID, store.ErrLeaseLost))
		}
		var rec taskRec
		if err := store.DecodeJSON("tasks/"+string(tk), b, &rec); err != nil {
			return err
		}
		if rec.Lease == "" || rec.Lease != t.Lease {
			return refuse(fmt.Errorf("task %s: %w", t.ID, store.ErrLeaseLost))
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
		rec.Tries++
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
