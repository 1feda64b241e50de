package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// Claim implements store.Store. It looks at up to 4*max due index entries
// per call, so it may return fewer than max tasks while more are due; the
// caller polls again. Its round trips do not grow with the sessions it
// claims from: one pipeline reads the due and the gone entries, one sends
// every session's claimScript; on a Cluster one MULTI on the {due} slot then
// moves the entries looked at (a crash before that leaves them where they
// were: a claimed task's entry at its due time, which the next look moves to
// the lease's end); on one server claimAllScript moves them itself.
func (s *Store) Claim(ctx context.Context, now time.Time, owner string, lease time.Duration, max int) ([]store.Task, error) {
	if max <= 0 || lease <= 0 || owner == "" {
		return nil, fmt.Errorf("%w: claim needs an owner, a lease and max > 0", store.ErrInvalid)
	}
	nowMs := store.Millis(now)
	s.reindexStep(ctx) // reindex.go: at most one bounded step every ReindexEvery
	var dueCmd, goneCmd *redis.StringSliceCmd
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		goneCmd = p.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.goneKey(), Start: "-inf",
			Stop: strconv.FormatInt(nowMs-s.opts.GoneGrace.Milliseconds(), 10), ByScore: true, Count: 100})
		dueCmd = p.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.dueKey(), Start: "-inf", Stop: strconv.FormatInt(nowMs, 10),
			ByScore: true, Count: int64(4 * max)})
		return nil
	})
	if err != nil {
		return nil, mapErr(err)
	}
	gone := goneCmd.Val()
	if len(gone) > 0 {
		if err := s.sweepGone(ctx, gone); err != nil {
			return nil, err
		}
	}
	// group by session, keeping due order
	var order []string
	bySession := map[string][]string{}
	var bad []string
	for _, m := range dueCmd.Val() {
		if slices.Contains(gone, m) {
			continue // just settled by sweepGone, after this read
		}
		sess, task, ok := splitMember(m)
		if !ok {
			bad = append(bad, m)
			continue
		}
		if _, seen := bySession[sess]; !seen {
			order = append(order, sess)
		}
		bySession[sess] = append(bySession[sess], task)
	}
	// one claimScript per session, all in one pipeline, asking for at most
	// max tasks in all (the port promises at most max)
	untilMs := store.Millis(now.Add(lease))
	cluster := s.cluster() // on one server the script moves the entries too
	type ask struct {
		sess, token string
		cmd         *redis.Cmd
	}
	var asks []ask
	var scripts scriptCmds
	if len(order) > 0 {
		_, _ = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			room := max
			for _, sess := range order {
				if room == 0 {
					break
				}
				tasks := bySession[sess]
				if len(tasks) > room {
					tasks = tasks[:room]
				}
				room -= len(tasks)
				token := store.LeaseToken(owner, randomBytes())
				args := []any{nowMs, token, untilMs}
				sc, keys := claimScript, []string{s.tasksKey(sess)}
				if !cluster {
					sc, keys = claimAllScript, append(keys, s.dueKey(), s.goneKey())
					args = append(args, member(sess, ""), nowMs+goneRecheck.Milliseconds())
				}
				for _, t := range tasks {
					args = append(args, t)
				}
				asks = append(asks, ask{sess, token, scripts.evalSha(ctx, p, sc, keys, args...)})
			}
			return nil
		})
		scripts.rerun(ctx, s.c)
	}
	var out []store.Task
	var moves []func(p redis.Pipeliner)
	var firstErr error
	move := func(f func(p redis.Pipeliner)) {
		if cluster {
			moves = append(moves, f)
		}
	}
	for _, a := range asks {
		res, err := a.cmd.Slice()
		if err != nil {
			if firstErr == nil {
				firstErr = mapErr(err) // leases taken there come back after the lease
			}
			continue
		}
		for _, r := range res {
			row, _ := r.([]any)
			if len(row) < 2 {
				continue
			}
			tid, _ := row[0].(string)
			mem := member(a.sess, tid)
			switch row[1] {
			case "claimed":
				var t store.Task
				effJSON, _ := row[2].(string)
				if err := json.Unmarshal([]byte(effJSON), &t.Effect); err != nil {
					if firstErr == nil {
						firstErr = store.Corrupt(s.tasksKey(a.sess)+" e:"+tid, err)
					}
					continue
				}
				dueS, _ := row[3].(string)
				attS, _ := row[4].(string)
				t.LastError, _ = row[5].(string)
				dueMs, _ := strconv.ParseInt(dueS, 10, 64)
				t.Tries, _ = strconv.Atoi(attS)
				t.ID, t.SessionID, t.DueAt = tid, a.sess, store.FromMillis(dueMs)
				t.Owner, t.Lease, t.LeaseUntil = owner, a.token, store.FromMillis(untilMs)
				move(func(p redis.Pipeliner) {
					p.ZAdd(ctx, s.dueKey(), redis.Z{Score: float64(untilMs), Member: mem})
				})
				out = append(out, t)
			case "later":
				nx, _ := row[2].(string)
				score, _ := strconv.ParseFloat(nx, 64)
				move(func(p redis.Pipeliner) {
					p.ZAddXX(ctx, s.dueKey(), redis.Z{Score: score, Member: mem})
				})
			case "gone":
				// Maybe a commit still in flight (its write-ahead entry came
				// before its script), maybe a commit that died. Keep the
				// entry and look again shortly; remember when it was first
				// seen so that sweepGone drops it after the grace if its
				// task never appears. Removing it here would lose a task
				// whose commit lands in between (its follow-up re-add can
				// run before this step) until the grace.
				move(func(p redis.Pipeliner) {
					p.ZAddXX(ctx, s.dueKey(), redis.Z{Score: float64(nowMs + goneRecheck.Milliseconds()), Member: mem})
					p.ZAddNX(ctx, s.goneKey(), redis.Z{Score: float64(nowMs), Member: mem})
				})
			case "corrupt":
				if firstErr == nil {
					firstErr = store.Corrupt(s.tasksKey(a.sess)+" m:"+tid, errors.New("bad task metadata"))
				}
			}
		}
	}
	if len(moves) > 0 || len(bad) > 0 {
		// P:{due} and P:{due}:gone share a slot: one MULTI
		_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, m := range bad {
				p.ZRem(ctx, s.dueKey(), m)
			}
			for _, mv := range moves {
				mv(p)
			}
			return nil
		})
		if err != nil && firstErr == nil {
			firstErr = mapErr(err)
		}
	}
	return out, firstErr
}

// goneRecheck is how soon an entry whose task was not found is looked at
// again.
const goneRecheck = time.Second

// sweepGone settles the entries first seen without their task more than
// GoneGrace ago (gone, read by Claim): a task that exists by now keeps (or
// gets back) its due entry; one that still does not exist loses it.
func (s *Store) sweepGone(ctx context.Context, gone []string) error {
	for _, m := range gone {
		sess, task, ok := splitMember(m)
		if ok {
			mt, err := s.c.HGet(ctx, s.tasksKey(sess), "m:"+task).Result()
			switch {
			case err == nil:
				dueS, _, _ := strings.Cut(mt, "\n")
				score, _ := strconv.ParseFloat(dueS, 64)
				if err := s.c.ZAddNX(ctx, s.dueKey(), redis.Z{Score: score, Member: m}).Err(); err != nil {
					return mapErr(err)
				}
			case errors.Is(err, redis.Nil):
				// Still no task: a commit that died after its write-ahead.
				if err := s.c.ZRem(ctx, s.dueKey(), m).Err(); err != nil {
					return mapErr(err)
				}
			default:
				return mapErr(err)
			}
		}
		if err := s.c.ZRem(ctx, s.goneKey(), m).Err(); err != nil {
			return mapErr(err)
		}
	}
	return nil
}

// leasedMeta is the metadata of a task a commit adds (meta), leased to the
// commit's lease when it asks for one (store.CommitLease), and the task's
// score in the due index: a leased task's entry sits at the lease's end, as a
// claimed task's does (so Claim passes it by and ReleaseLeases finds it).
// The commit script adds the metadata only to a task not already pending.
func leasedMeta(l *store.CommitLease, e fsm.Effect, dueMs int64) (string, float64) {
	if !l.LeaseFor(e, store.FromMillis(dueMs)) {
		return meta(dueMs), float64(dueMs)
	}
	until := store.Millis(l.Until)
	return strconv.FormatInt(dueMs, 10) + "\n" + strconv.FormatInt(until, 10) + "\n0\n" + l.Token, float64(until)
}

// grantAdded records in l the leased tasks among those the commit script
// added to rec's session (a task already pending was not added, so it is
// not granted).
func grantAdded(l *store.CommitLease, rec fsm.Session, effects []fsm.Effect, added []string) {
	if l == nil {
		return
	}
	for _, e := range effects {
		due := store.TaskDue(e, rec)
		if l.LeaseFor(e, due) && slices.Contains(added, e.ID) {
			l.Grant(rec.ID, e, due)
		}
	}
}

func randomBytes() []byte {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return b
}

// settle completes or retries a leased task: on one server in one script
// with its P:{due} entry; on a Cluster the session's slot first, then the
// entry (a lost lease must not move another claimer's entry).
func (s *Store) settle(ctx context.Context, t store.Task, mode string, nextDue time.Time, errText string) error {
	ms := store.Millis(nextDue)
	mem := member(t.SessionID, t.ID)
	_, cluster := s.c.(*redis.ClusterClient)
	var r string
	var err error
	if cluster {
		r, err = settleScript.Run(ctx, s.c, []string{s.tasksKey(t.SessionID)}, mode, t.ID, t.Lease, ms, errText).Text()
	} else {
		r, err = settleAllScript.Run(ctx, s.c, []string{s.tasksKey(t.SessionID), s.dueKey()}, mode, t.ID, t.Lease, ms, errText, mem).Text()
	}
	if err != nil {
		return fmt.Errorf("task %s: %w", t.ID, mapErr(err))
	}
	if r != "ok" {
		return fmt.Errorf("task %s: %w", t.ID, store.ErrLeaseLost)
	}
	if !cluster {
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	if mode == "complete" {
		err = s.c.ZRem(ctx, s.dueKey(), mem).Err()
	} else {
		err = s.c.ZAdd(ctx, s.dueKey(), redis.Z{Score: float64(ms), Member: mem}).Err()
	}
	if err != nil {
		// the settle is done; the index entry is corrected by the next Claim
		s.opts.Logger.Warn("redisstore: outbox index follow-up", "task", t.ID, "err", err)
	}
	return nil
}

// Complete implements store.Store.
func (s *Store) Complete(ctx context.Context, t store.Task) error {
	return s.settle(ctx, t, "complete", time.Time{}, "")
}

// Retry implements store.Store.
func (s *Store) Retry(ctx context.Context, t store.Task, nextDue time.Time, errText string) error {
	return s.settle(ctx, t, "retry", nextDue, errText)
}

// releasePage is the COUNT hint of one ZSCAN step of ReleaseLeases.
const releasePage = 256

// ReleaseLeases implements store.Store (see the package doc). It walks P:{due}
// with ZSCAN, which returns every entry present for the whole walk however
// scores move meanwhile (paging a score range would skip entries as this and
// other processes move them); the walk is the whole index, a bounded page at
// a time. A task under a live lease has its entry at the lease's end, so only
// a page's entries after now are looked into: one pipelined read of their
// metadata per page, then, per session with a claim to release,
// releaseScript on that session's slot, then the entry is moved back to the
// task's due time. A crash before that move leaves the entry at the lease's
// end (the task comes back then, as without this call); the next
// ReleaseLeases moves such a late entry of a task without a lease back to its
// due time, so calling it again completes a release whose follow-up failed.
func (s *Store) ReleaseLeases(ctx context.Context, ownerPrefix string, now time.Time) (int, error) {
	if ownerPrefix == "" {
		return 0, fmt.Errorf("%w: release leases needs an owner prefix", store.ErrInvalid)
	}
	nowMs := store.Millis(now)
	released := 0
	var cursor uint64
	for {
		kv, next, err := s.c.ZScan(ctx, s.dueKey(), cursor, "", releasePage).Result()
		if err != nil {
			return released, mapErr(err)
		}
		n, err := s.releasePage(ctx, kv, ownerPrefix, nowMs)
		released += n
		if err != nil {
			return released, err
		}
		if cursor = next; cursor == 0 {
			return released, nil
		}
	}
}

// releasePage releases the claims of one ZSCAN page (member, score, …).
func (s *Store) releasePage(ctx context.Context, kv []string, ownerPrefix string, nowMs int64) (int, error) {
	type entry struct {
		task  string
		score int64
	}
	var order []string
	bySession := map[string][]entry{}
	for i := 0; i+1 < len(kv); i += 2 {
		score, err := strconv.ParseFloat(kv[i+1], 64)
		if err != nil || int64(score) <= nowMs {
			continue // due (Claim's business) or not a number
		}
		sess, task, ok := splitMember(kv[i])
		if !ok {
			continue
		}
		if _, seen := bySession[sess]; !seen {
			order = append(order, sess)
		}
		bySession[sess] = append(bySession[sess], entry{task, int64(score)})
	}
	if len(order) == 0 {
		return 0, nil
	}
	metas := make(map[string]*redis.SliceCmd, len(order))
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, sess := range order {
			fields := make([]string, 0, len(bySession[sess]))
			for _, e := range bySession[sess] {
				fields = append(fields, "m:"+e.task)
			}
			metas[sess] = p.HMGet(ctx, s.tasksKey(sess), fields...)
		}
		return nil
	})
	if err != nil {
		return 0, mapErr(err)
	}
	released := 0
	for _, sess := range order {
		var mine []any
		for i, v := range metas[sess].Val() {
			e := bySession[sess][i]
			m, _ := v.(string)
			parts := strings.SplitN(m, "\n", 4)
			if len(parts) != 4 {
				continue // gone (Claim's business) or corrupt (Claim reports it)
			}
			due, _ := strconv.ParseInt(parts[0], 10, 64)
			until, _ := strconv.ParseInt(parts[1], 10, 64)
			switch lease := parts[3]; {
			case lease != "" && until > nowMs && strings.HasPrefix(store.LeaseOwner(lease), ownerPrefix):
				mine = append(mine, e.task)
			case lease == "" && due < e.score:
				// a late entry (a follow-up that failed): earlier is harmless
				_ = s.c.ZAddLT(ctx, s.dueKey(), redis.Z{Score: float64(min(due, nowMs)), Member: member(sess, e.task)}).Err()
			}
		}
		if len(mine) == 0 {
			continue
		}
		res, err := releaseScript.Run(ctx, s.c, []string{s.tasksKey(sess)}, append([]any{nowMs, ownerPrefix}, mine...)...).Slice()
		if err != nil {
			return released, mapErr(err)
		}
		// the leases are gone: move their entries from the lease's end back
		// to the due time (only ever earlier)
		var back []redis.Z
		for _, r := range res {
			row, _ := r.([]any)
			if len(row) < 2 {
				continue
			}
			tid, _ := row[0].(string)
			dueS, _ := row[1].(string)
			due, _ := strconv.ParseInt(dueS, 10, 64)
			back = append(back, redis.Z{Score: float64(due), Member: member(sess, tid)})
		}
		released += len(back)
		if len(back) > 0 {
			if err := s.c.ZAddLT(context.WithoutCancel(ctx), s.dueKey(), back...).Err(); err != nil {
				return released, fmt.Errorf("session %s: leases released, index entries left at the lease's end: %w", sess, mapErr(err))
			}
		}
	}
	return released, nil
}

// PendingTasks implements store.Store.
func (s *Store) PendingTasks(ctx context.Context, sessionID string) ([]store.Task, error) {
	key := s.tasksKey(sessionID)
	h, err := s.c.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, mapErr(err)
	}
	var out []store.Task
	for f, v := range h {
		tid, ok := strings.CutPrefix(f, "m:")
		if !ok {
			continue
		}
		parts := strings.SplitN(v, "\n", 4)
		if len(parts) != 4 {
			return nil, store.Corrupt(key+" "+f, errors.New("bad task metadata"))
		}
		due, _ := strconv.ParseInt(parts[0], 10, 64)
		until, _ := strconv.ParseInt(parts[1], 10, 64)
		att, _ := strconv.Atoi(parts[2])
		t := store.Task{ID: tid, SessionID: sessionID, DueAt: store.FromMillis(due), Tries: att,
			Lease: parts[3], Owner: store.LeaseOwner(parts[3]), LastError: h["x:"+tid]}
		if parts[3] != "" {
			t.LeaseUntil = store.FromMillis(until)
		} else {
			t.Owner = ""
		}
		if err := store.DecodeJSON(key+" e:"+tid, []byte(h["e:"+tid]), &t.Effect); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b store.Task) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// OutboxStats implements store.Store. It reads the due index, so Pending
// may briefly count a task just done, and a leased task counts at its
// lease's end.
func (s *Store) OutboxStats(ctx context.Context, now time.Time) (store.OutboxStats, error) {
	var card, due *redis.IntCmd
	var first *redis.ZSliceCmd
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		card = p.ZCard(ctx, s.dueKey())
		due = p.ZCount(ctx, s.dueKey(), "-inf", strconv.FormatInt(store.Millis(now), 10))
		first = p.ZRangeWithScores(ctx, s.dueKey(), 0, 0)
		return nil
	})
	if err != nil {
		return store.OutboxStats{}, mapErr(err)
	}
	st := store.OutboxStats{Pending: int(card.Val()), DueNow: int(due.Val())}
	if z := first.Val(); len(z) > 0 {
		st.OldestDue = store.FromMillis(int64(z[0].Score))
	}
	return st, nil
}
