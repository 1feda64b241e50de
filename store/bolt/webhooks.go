package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/chargeflow/chargeflow/store"
)

// The webhook deliveries (store.Webhooks). Buckets:
//
//	whdel   session 0x00 be64(seq) → delivery JSON
//	whpend  session 0x00 be64(seq) → ""  (the pending ones: the session's queue)
//	whq     session → queueRec  (present while the session has pending deliveries)
//	whdue   be64(next ms) session → ""  (next = the head's NextAt, or the lease's end)
//	whlog   LogKey → ""  (every delivery, for the log)
//	whfail  LogKey → ""  (the given-up ones)
var (
	bWhDel  = []byte("whdel")
	bWhPend = []byte("whpend")
	bWhQ    = []byte("whq")
	bWhDue  = []byte("whdue")
	bWhLog  = []byte("whlog")
	bWhFail = []byte("whfail")
)

// queueRec is a session's queue: when it next needs a look, and its lease.
type queueRec struct {
	Due        int64  `json:"due"`
	Lease      string `json:"lease,omitempty"`
	LeaseUntil int64  `json:"lease_until,omitempty"`
}

func seqKey(session string, seq int64) []byte {
	return append(append([]byte(session), 0), be64(uint64(seq))...)
}

func whDueKey(ms int64, session string) []byte { return append(msKey(ms), session...) }

// addDeliveries queues a commit's events (in the commit's transaction).
func addDeliveries(tx *bolt.Tx, session string, version int64, events []store.WebhookEvent) error {
	if len(events) == 0 {
		return nil
	}
	ds, err := store.NewDeliveries(session, version, events)
	if err != nil {
		return err
	}
	for _, d := range ds {
		k := seqKey(session, d.Seq)
		if tx.Bucket(bWhDel).Get(k) != nil {
			continue // the same event again: kept as it is
		}
		if err := putDelivery(tx, d); err != nil {
			return err
		}
		if err := tx.Bucket(bWhPend).Put(k, nil); err != nil {
			return err
		}
		if err := tx.Bucket(bWhLog).Put([]byte(d.LogKey()), nil); err != nil {
			return err
		}
	}
	return reindexQueue(tx, session, time.Time{})
}

func putDelivery(tx *bolt.Tx, d store.Delivery) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return tx.Bucket(bWhDel).Put(seqKey(d.SessionID, d.Seq), b)
}

func getDelivery(tx *bolt.Tx, session string, seq int64) (store.Delivery, error) {
	k := seqKey(session, seq)
	b := tx.Bucket(bWhDel).Get(k)
	if b == nil {
		return store.Delivery{}, fmt.Errorf("delivery %s/%d: %w", session, seq, store.ErrNotFound)
	}
	var d store.Delivery
	if err := store.DecodeJSON(fmt.Sprintf("whdel/%s/%d", session, seq), b, &d); err != nil {
		return d, err
	}
	return d, nil
}

func getQueue(tx *bolt.Tx, session string) (q queueRec, ok bool, err error) {
	b := tx.Bucket(bWhQ).Get([]byte(session))
	if b == nil {
		return q, false, nil
	}
	return q, true, store.DecodeJSON("whq/"+session, b, &q)
}

// head returns the session's oldest pending delivery.
func head(tx *bolt.Tx, session string) (store.Delivery, bool, error) {
	prefix := append([]byte(session), 0)
	k, _ := tx.Bucket(bWhPend).Cursor().Seek(prefix)
	if k == nil || !bytes.HasPrefix(k, prefix) || len(k) != len(prefix)+8 {
		return store.Delivery{}, false, nil
	}
	d, err := getDelivery(tx, session, int64(binary.BigEndian.Uint64(k[len(prefix):])))
	return d, err == nil, err
}

// reindexQueue recomputes a session's queue entry: its due key is the
// lease's end while a lease newer than liveAt holds it, else the head's
// NextAt; no pending delivery, no entry.
func reindexQueue(tx *bolt.Tx, session string, liveAt time.Time) error {
	q, ok, err := getQueue(tx, session)
	if err != nil {
		return err
	}
	if ok {
		if err := tx.Bucket(bWhDue).Delete(whDueKey(q.Due, session)); err != nil {
			return err
		}
	}
	h, found, err := head(tx, session)
	if err != nil {
		return err
	}
	if !found {
		return tx.Bucket(bWhQ).Delete([]byte(session))
	}
	if q.Lease != "" && q.LeaseUntil > store.Millis(liveAt) {
		q.Due = q.LeaseUntil
	} else {
		q.Lease, q.LeaseUntil = "", 0
		q.Due = store.Millis(h.NextAt)
	}
	b, err := json.Marshal(q)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bWhQ).Put([]byte(session), b); err != nil {
		return err
	}
	return tx.Bucket(bWhDue).Put(whDueKey(q.Due, session), nil)
}

// ClaimDeliveries implements store.Store.
func (s *Store) ClaimDeliveries(ctx context.Context, now time.Time, owner string, lease time.Duration, max int) ([]store.Delivery, error) {
	if max <= 0 || lease <= 0 || owner == "" {
		return nil, fmt.Errorf("%w: claim needs an owner, a lease and max > 0", store.ErrInvalid)
	}
	nowMs := store.Millis(now)
	if due, err := s.anyDue(ctx, bWhDue, nowMs); err != nil || !due {
		return nil, err
	}
	var out []store.Delivery
	err := s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		out = nil
		var sessions []string
		cur := tx.Bucket(bWhDue).Cursor()
		for k, _ := cur.First(); k != nil && len(sessions) < max && msFromKey(k) <= nowMs; k, _ = cur.Next() {
			sessions = append(sessions, string(k[8:]))
		}
		for _, sess := range sessions {
			q, ok, err := getQueue(tx, sess)
			if err != nil {
				return err
			}
			h, found, err := head(tx, sess)
			if err != nil {
				return err
			}
			if !ok || !found || store.Millis(h.NextAt) > nowMs || (q.Lease != "" && q.LeaseUntil > nowMs) {
				if err := reindexQueue(tx, sess, now); err != nil {
					return err
				}
				continue
			}
			q.Lease = store.LeaseToken(owner, randomBytes())
			q.LeaseUntil = store.Millis(now.Add(lease))
			if err := tx.Bucket(bWhDue).Delete(whDueKey(q.Due, sess)); err != nil {
				return err
			}
			q.Due = q.LeaseUntil
			b, err := json.Marshal(q)
			if err != nil {
				return err
			}
			if err := tx.Bucket(bWhQ).Put([]byte(sess), b); err != nil {
				return err
			}
			if err := tx.Bucket(bWhDue).Put(whDueKey(q.Due, sess), nil); err != nil {
				return err
			}
			h.Lease, h.LeaseUntil = q.Lease, store.FromMillis(q.LeaseUntil)
			out = append(out, h)
		}
		return nil
	})
	return out, err
}

// SettleDelivery implements store.Store.
func (s *Store) SettleDelivery(ctx context.Context, d store.Delivery, o store.DeliveryOutcome) error {
	if !o.Status.Valid() {
		return fmt.Errorf("%w: delivery outcome %q", store.ErrInvalid, o.Status)
	}
	return s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		q, ok, err := getQueue(tx, d.SessionID)
		if err != nil {
			return err
		}
		if !ok || q.Lease == "" || q.Lease != d.Lease {
			return refuse(fmt.Errorf("delivery %s: %w", d.ID, store.ErrLeaseLost))
		}
		cur, err := getDelivery(tx, d.SessionID, d.Seq)
		if err != nil {
			return err
		}
		n := cur.Settled(o)
		if err := putDelivery(tx, n); err != nil {
			return err
		}
		k := seqKey(d.SessionID, d.Seq)
		if n.Status != store.DeliveryPending {
			if err := tx.Bucket(bWhPend).Delete(k); err != nil {
				return err
			}
		}
		if n.Status == store.DeliveryFailed {
			if err := tx.Bucket(bWhFail).Put([]byte(n.LogKey()), nil); err != nil {
				return err
			}
		}
		q.Lease, q.LeaseUntil = "", 0
		b, err := json.Marshal(q)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bWhQ).Put([]byte(d.SessionID), b); err != nil {
			return err
		}
		return reindexQueue(tx, d.SessionID, time.Time{})
	})
}

// GetDelivery implements store.Store.
func (s *Store) GetDelivery(ctx context.Context, id string) (d store.Delivery, err error) {
	sess, seq, err := store.ParseEventID(id)
	if err != nil {
		return d, err
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		d, err = getDelivery(tx, sess, seq)
		return sameID(d, id, err)
	})
	return d, err
}

// sameID refuses a delivery at the place id names that is another event (a
// commit made again at that version after its first one was lost).
func sameID(d store.Delivery, id string, err error) error {
	if err == nil && d.ID != id {
		return fmt.Errorf("delivery %s: %w", id, store.ErrNotFound)
	}
	return err
}

// RetryDelivery implements store.Store.
func (s *Store) RetryDelivery(ctx context.Context, id string, now time.Time) (d store.Delivery, err error) {
	sess, seq, err := store.ParseEventID(id)
	if err != nil {
		return d, err
	}
	err = s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		cur, err := getDelivery(tx, sess, seq)
		if err := sameID(cur, id, err); err != nil {
			return err
		}
		if cur.Status == store.DeliveryFailed {
			if err := tx.Bucket(bWhFail).Delete([]byte(cur.LogKey())); err != nil {
				return err
			}
		}
		d = cur.Requeued(now)
		if err := putDelivery(tx, d); err != nil {
			return err
		}
		if err := tx.Bucket(bWhPend).Put(seqKey(sess, seq), nil); err != nil {
			return err
		}
		return reindexQueue(tx, sess, now)
	})
	return d, err
}

// maxDeliveryScan bounds the log entries one ListDeliveries page looks at
// (a selective status filter over a long log).
const maxDeliveryScan = 5000

// ListDeliveries implements store.Store: a session's own deliveries from its
// queue bucket, the given-up ones from their index, the rest from the log.
func (s *Store) ListDeliveries(ctx context.Context, f store.DeliveryFilter) (page store.DeliveryPage, err error) {
	limit, err := f.Check()
	if err != nil {
		return page, err
	}
	after, err := store.DecodeCursor(f.Cursor)
	if err != nil {
		return page, err
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		page = store.DeliveryPage{}
		if f.SessionID != "" {
			return sessionDeliveries(tx, f, limit, after, &page)
		}
		idx := bWhLog
		if f.Status == store.DeliveryFailed {
			idx = bWhFail
		}
		cur := tx.Bucket(idx).Cursor()
		var k []byte
		if after == "" {
			k, _ = cur.Last()
		} else {
			cur.Seek([]byte(after))
			k, _ = cur.Prev()
		}
		var last []byte
		for scanned := 0; k != nil; k, _ = cur.Prev() {
			if len(page.Deliveries) == limit {
				page.NextCursor = store.EncodeCursor(page.Deliveries[limit-1].LogKey())
				return nil
			}
			if scanned++; scanned > maxDeliveryScan {
				page.NextCursor = store.EncodeCursor(string(last)) // a short page: go on after the last one looked at
				return nil
			}
			last = k
			sess, seq, err := store.ParseEventID(store.LogKeyID(string(k)))
			if err != nil {
				return store.Corrupt(string(idx)+"/"+string(k), err)
			}
			d, err := getDelivery(tx, sess, seq)
			if err != nil {
				return err
			}
			if f.Matches(d) {
				page.Deliveries = append(page.Deliveries, d)
			}
		}
		return nil
	})
	return page, err
}

// sessionDeliveries lists one session's deliveries newest first.
func sessionDeliveries(tx *bolt.Tx, f store.DeliveryFilter, limit int, after string, page *store.DeliveryPage) error {
	prefix := append([]byte(f.SessionID), 0)
	cur := tx.Bucket(bWhDel).Cursor()
	var all []store.Delivery
	for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
		var d store.Delivery
		if err := store.DecodeJSON("whdel/"+string(k), v, &d); err != nil {
			return err
		}
		all = append(all, d)
	}
	return store.PageSessionDeliveries(all, f, limit, after, page)
}

// DeliveryStats implements store.Store.
func (s *Store) DeliveryStats(ctx context.Context) (st store.DeliveryStats, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		st = store.DeliveryStats{Pending: tx.Bucket(bWhPend).Stats().KeyN, Failed: tx.Bucket(bWhFail).Stats().KeyN}
		return nil
	})
	return st, err
}

// TrimDeliveries implements store.Store: the log's oldest entries (by
// creation, which comes before being done) up to 4*max of them.
func (s *Store) TrimDeliveries(ctx context.Context, doneBefore time.Time, max int) (int, error) {
	if max <= 0 {
		return 0, fmt.Errorf("%w: trim needs max > 0", store.ErrInvalid)
	}
	limit := []byte(store.LogKeyBefore(doneBefore))
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		n = 0
		var keys [][]byte
		cur := tx.Bucket(bWhLog).Cursor()
		for k, _ := cur.First(); k != nil && bytes.Compare(k, limit) < 0 && len(keys) < 4*max; k, _ = cur.Next() {
			keys = append(keys, copyBytes(k))
		}
		for _, k := range keys {
			if n == max {
				break
			}
			sess, seq, err := store.ParseEventID(store.LogKeyID(string(k)))
			if err != nil {
				return store.Corrupt("whlog/"+string(k), err)
			}
			d, err := getDelivery(tx, sess, seq)
			if err != nil {
				return err
			}
			if !d.Trimmable(doneBefore) {
				continue
			}
			for _, del := range []struct {
				b []byte
				k []byte
			}{{bWhDel, seqKey(sess, seq)}, {bWhLog, k}, {bWhFail, k}} {
				if err := tx.Bucket(del.b).Delete(del.k); err != nil {
					return err
				}
			}
			n++
		}
		return nil
	})
	return n, err
}

// ReleaseDeliveryLeases implements store.Store: every queue is looked at
// (one small record per session with pending deliveries).
func (s *Store) ReleaseDeliveryLeases(ctx context.Context, ownerPrefix string, now time.Time) (int, error) {
	if ownerPrefix == "" {
		return 0, fmt.Errorf("%w: release leases needs an owner prefix", store.ErrInvalid)
	}
	nowMs := store.Millis(now)
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx, _ *writeState) error {
		n = 0
		var mine []string
		err := tx.Bucket(bWhQ).ForEach(func(k, v []byte) error {
			var q queueRec
			if err := store.DecodeJSON("whq/"+string(k), v, &q); err != nil {
				return err
			}
			if q.Lease != "" && q.LeaseUntil > nowMs && strings.HasPrefix(store.LeaseOwner(q.Lease), ownerPrefix) {
				mine = append(mine, string(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, sess := range mine {
			// reindexQueue drops a lease that is not live at its liveAt
			if err := reindexQueue(tx, sess, store.FromMillis(math.MaxInt64/2)); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}
