package boltstore

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/chargeflow/chargeflow/store"
)

// Group commit. bbolt has one writer and every committed transaction is an
// fsync, so writes made one transaction each queue behind each other's
// fsync. Every write of the store is therefore handed to one writer
// goroutine, which runs the writes waiting when it looks in one
// transaction, one after another, and commits them with one fsync. There is
// no delay: a lone write is taken at once and committed alone; writes that
// arrive during a commit wait for it and share the next one.
//
// bbolt's own db.Batch does not fit: it waits MaxBatchDelay (10 ms) for
// company even when there is none, and it runs a call refused by its own
// checks a second time alone, after the batch.
//
// A call refused by its own checks (a version conflict, an existing id, a
// lost lease) must not take the others down, and its answer must be the one
// it would get alone. Most refusals are checks made before the call writes
// anything (refuse marks them): such a call is simply answered with its
// refusal once the transaction commits, and the batch goes on — it is as if
// it had run alone right after the calls before it, which commit first.
// Any other error of a call (bbolt has no savepoints, so what it wrote
// cannot be undone alone) rolls the transaction back and the batch runs
// again without that call. A call failed first in its batch saw nothing but
// committed data: its error is its answer. One failed behind others saw
// their uncommitted writes: it runs again at the head of the next batch, on
// what they committed. Either way a failed call wrote nothing.
// A call's function may therefore run more than once, each time in a fresh
// transaction: it must set its results anew on every run and leave nothing
// outside the transaction until update returns.

// writeCall is one caller's write waiting for the writer.
type writeCall struct {
	ctx     context.Context
	fn      func(tx *bolt.Tx, w *writeState) error
	w       writeState // of fn's last run
	refused error      // fn's last run refused before writing (refuse)
	done    chan error // buffered: the writer never waits for the caller
}

// refusal is a call's refusal made by its checks before it wrote anything
// in the transaction (see the comment at the top of this file).
type refusal struct{ err error }

func (r refusal) Error() string { return r.err.Error() }
func (r refusal) Unwrap() error { return r.err }

// refuse marks err as a refusal decided before the call's first write in
// its transaction: the batch's other calls go on without a rollback.
func refuse(err error) error { return refusal{err} }

// panicked carries a panic of a call's function back to its caller's
// goroutine, where it is raised again (the writer goroutine must not die).
type panicked struct {
	value any
	stack []byte
}

func (p *panicked) Error() string {
	return fmt.Sprintf("boltstore: write panicked: %v\n%s", p.value, p.stack)
}

// update runs fn in a write transaction shared with the writes of other
// callers waiting at the same time (see the comment at the top of this
// file), and returns once that transaction is committed and fsynced, or
// fn's own error (nothing of fn written). When fn appended a change the
// waiters are woken after the commit.
func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx, w *writeState) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := &writeCall{ctx: ctx, fn: fn, done: make(chan error, 1)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return store.ErrClosed
	}
	s.queue = append(s.queue, c)
	s.waiting.Add(1)
	s.wake.Signal()
	s.mu.Unlock()
	// Wait even when ctx ends: the write may be in a transaction already,
	// and the caller must learn whether it was made.
	err := <-c.done
	s.waiting.Add(-1)
	if p, ok := err.(*panicked); ok {
		panic(p.value)
	}
	return err
}

// writer owns every write transaction: it takes what is waiting, at most
// Options.MaxBatch calls, and commits them together. After Close it
// finishes the calls accepted before, then returns.
func (s *Store) writer() {
	defer s.wg.Done()
	var pending []*writeCall
	for {
		s.mu.Lock()
		for len(pending) == 0 && len(s.queue) == 0 && !s.closed {
			s.wake.Wait()
		}
		pending = append(pending, s.queue...)
		clear(s.queue)
		s.queue = s.queue[:0]
		s.mu.Unlock()
		if len(pending) == 0 { // closed, and nothing left
			return
		}
		n := min(len(pending), s.opts.MaxBatch)
		again := s.commitBatch(pending[:n])
		rest := pending[n:]
		pending = append(again, rest...)
	}
}

// commitBatch runs calls in one transaction and answers each of them, and
// returns the calls refused behind others, to run again first.
func (s *Store) commitBatch(calls []*writeCall) (again []*writeCall) {
	live := make([]*writeCall, 0, len(calls))
	for _, c := range calls {
		if err := c.ctx.Err(); err != nil {
			c.done <- err // never ran: nothing written
			continue
		}
		live = append(live, c)
	}
	for len(live) > 0 {
		failed, failErr := -1, error(nil)
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, c := range live {
				c.refused = nil
				if err := c.run(tx); err != nil {
					var r refusal
					if errors.As(err, &r) {
						c.refused = r.err // wrote nothing: the others go on
						continue
					}
					failed, failErr = i, err
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			// Committed, or not at all (the same answer for every call but
			// the refused ones, whose refusal holds once the calls before
			// them are committed).
			var published bool
			if err == nil {
				made := 0
				for _, c := range live {
					if c.refused == nil {
						s.written.put(c.w.written)
						published = published || c.w.published
						made++
					}
				}
				s.writes.Add(uint64(made))
				s.commits.Add(1)
				if published {
					s.notify()
				}
			}
			for _, c := range live {
				if err == nil && c.refused != nil {
					c.done <- mapErr(c.refused)
					continue
				}
				c.done <- mapErr(err)
			}
			return again
		}
		s.rollbacks.Add(1)
		c := live[failed]
		var p *panicked
		switch {
		case errors.As(failErr, &p):
			c.done <- failErr // raised again by its caller
		case failed == 0:
			c.done <- mapErr(failErr) // decided on committed data alone
		default:
			again = append(again, c)
		}
		live = slices.Delete(live, failed, failed+1)
	}
	return again
}

// run runs the call's function once, in tx, from a fresh write state.
func (c *writeCall) run(tx *bolt.Tx) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &panicked{value: v, stack: debug.Stack()}
		}
	}()
	c.w = writeState{}
	return c.fn(tx, &c.w)
}

// WriteStats says how many writes were committed since Open, and in how
// many transactions (each one fsync): writes/commits is how many writes one
// fsync carried.
func (s *Store) WriteStats() (writes, commits uint64) {
	return s.writes.Load(), s.commits.Load()
}
