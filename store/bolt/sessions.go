package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

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
	enc, err := encodeCommit(rec, c)
	if err != nil {
		return err
	}
	err = s.update(ctx, func(tx *bolt.Tx, w *writeState) error {
		if tx.Bucket(bSessions).Get([]byte(rec.ID)) != nil {
			return refuse(fmt.Errorf("session %s: %w", rec.ID, store.ErrExists))
		}
		if rec.State.Active() {
			ck := connKey(rec.ChargerID, rec.Connector)
			if other := tx.Bucket(bConn).Get(ck); other != nil {
				return refuse(fmt.Errorf("charger %s connector %d has session %s: %w", rec.ChargerID, rec.Connector, other, store.ErrConnectorBusy))
			}
		}
		return s.write(tx, w, nil, rec, c, enc)
	})
	return leaseOutcome(c.Lease, err)
}

// Commit implements store.Store.
func (s *Store) Commit(ctx context.Context, c store.Commit) error {
	rec, err := store.CheckCommit(c, false)
	if err != nil {
		return err
	}
	enc, err := encodeCommit(rec, c) // before the writer: see written.go
	if err != nil {
		return err
	}
	err = s.update(ctx, func(tx *bolt.Tx, w *writeState) error {
		stored := tx.Bucket(bSessions).Get([]byte(rec.ID))
		if stored == nil {
			return refuse(fmt.Errorf("session %s: %w", rec.ID, store.ErrNotFound))
		}
		old, ok := s.written.lookup(rec.ID, stored)
		if !ok {
			sess, err := store.DecodeSession("sessions/"+rec.ID, stored)
			if err != nil {
				return err
			}
			old = prevOf(sess)
		}
		if old.version != c.ExpectedVersion {
			return refuse(fmt.Errorf("session %s at version %d, not %d: %w", rec.ID, old.version, c.ExpectedVersion, store.ErrVersionConflict))
		}
		return s.write(tx, w, &old, rec, c, enc)
	})
	return leaseOutcome(c.Lease, err)
}

// write stores rec (replacing old, nil when new; enc its JSON) with
// everything it implies.
func (s *Store) write(tx *bolt.Tx, w *writeState, old *prevRec, rec fsm.Session, c store.Commit, enc *encodedCommit) error {
	if c.Lease != nil {
		c.Lease.Granted = nil // a transaction run again starts afresh
	}
	if err := tx.Bucket(bSessions).Put([]byte(rec.ID), enc.data); err != nil {
		return err
	}
	// indexes
	idx := tx.Bucket(bIdx)
	if old != nil {
		for _, k := range old.idx {
			if err := idx.Delete(k); err != nil {
				return err
			}
		}
		if old.outOrderNo != "" && old.outOrderNo != rec.OutOrderNo {
			if err := tx.Bucket(bOON).Delete([]byte(old.outOrderNo)); err != nil {
				return err
			}
		}
	}
	next := prevOf(rec)
	w.written = append(w.written, writtenPut{id: rec.ID, sum: enc.sum, prev: next})
	for _, k := range next.idx {
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
	for _, b := range enc.history {
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
		leaseAdded(&t, rec.ID, c.Lease)
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
	if err := addDeliveries(tx, rec.ID, rec.Version, c.Webhooks); err != nil {
		return err
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
