package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
)

// The commit, in as few round trips as the keys allow.
//
// On one server (a single Redis, or Sentinel's primary: the client is not a
// Cluster client), commitAllScript does the whole commit in ONE round trip:
// the compare-and-set, the record, history, tasks and webhooks, and with them
// the derived indexes (P:{due}, the lists, P:oon, the connector's release,
// the webhook lists and due entry) and the feed append. Nothing can come
// between the record and its indexes, so there is no write-ahead to repair.
//
// On a Cluster a script touches one slot, so the global indexes stay derived
// data written around commitSlotScript, in TWO round trips:
//
//  1. One pipeline: the write-ahead (the new tasks' P:{due} entries with ZADD
//     LT, the new record's lists and P:oon, the deliveries' list entries and
//     due touch), then the session's script. Everything readers need to
//     find the new record is written ahead of it, as before: if the script
//     then fails or loses its compare-and-set, the extra entries point at
//     nothing or at a record that does not match, and readers skip them
//     (the package doc's rules).
//  2. Once the script has committed, one pipeline of the follow-up: the feed
//     append (a change never announces a version that lost its
//     compare-and-set), the added tasks' entries at their exact time where a
//     claim may have moved them, the disarmed tasks' and the old record's
//     stale entries removed, the connector released on a terminal state, an
//     old out_order_no dropped, the webhook due entry touched again. Stale
//     list entries are then re-checked against the record (reverify), the
//     one extra round trip, on commits that leave a list.
//
// Why write-ahead and script share one pipeline: the cluster client sends each
// node's share on its own connection at once, so the script no longer waits
// a round trip for the write-ahead's acknowledgement. The index entries can
// then be missing behind a committed script in two cases only: the process
// dies in the instant between writing two sockets, or the index's primary
// refused the write-ahead (a failover, docs/operations.md "A Redis
// failover") while the session's primary took the script. Step 2 writes the
// write-ahead again when any of it failed; if step 2 fails as well, the
// re-index sweep (reindex.go) puts the tasks, the lists and P:oon back from
// the record, as it does after a lost write (docs/operations.md "What
// survives a lost write, and why"). The other order — script first, indexes
// after — would leave that window open for a whole round trip on every
// commit, and a crash in it would strand the commit's timers until the sweep.

// taskOp is what the task of effect e of commit c starts with, if the
// commit adds it: its metadata for the commit script (see the package doc's
// P:{s:<id>}:t) and the score of its P:{due} entry (when the task needs its
// first look). The one place per-op task metadata is built.
func taskOp(c store.Commit, e fsm.Effect, rec fsm.Session) (taskMeta string, score float64) {
	return leasedMeta(c.Lease, e, store.Millis(store.TaskDue(e, rec))) // outbox.go
}

// commit is one commit's script arguments and what its follow-up needs.
type commit struct {
	c          store.Commit
	rec        fsm.Session
	head       []any              // ARGV of commitHead
	due        map[string]float64 // task → the score of its P:{due} entry
	deliveries []store.Delivery
	index      indexLine // the new record's derived entries
	claim      string    // a creation's connector claim taken by commitAllScript ("" for none)
	added      []string  // after the script: the tasks it added (not pending before)
}

func (s *Store) newCommit(mode string, c store.Commit, rec fsm.Session) (*commit, error) {
	data, err := store.MarshalSession(rec)
	if err != nil {
		return nil, err
	}
	args := []any{mode, c.ExpectedVersion, rec.Version, data, len(c.History)}
	for _, h := range c.History {
		b, err := json.Marshal(h)
		if err != nil {
			return nil, err
		}
		args = append(args, b)
	}
	args = append(args, len(c.Effects))
	due := map[string]float64{}
	for _, e := range c.Effects {
		if e.Kind == fsm.EffDisarmTimer {
			args = append(args, "d", e.TimerID)
			continue
		}
		b, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		m, score := taskOp(c, e, rec)
		args = append(args, "a", e.ID, b, m, score)
		due[e.ID] = score
	}
	deliveries, err := store.NewDeliveries(rec.ID, rec.Version, c.Webhooks)
	if err != nil {
		return nil, err
	}
	if args, err = appendDeliveries(args, deliveries); err != nil {
		return nil, err
	}
	cm := &commit{c: c, rec: rec, due: due, deliveries: deliveries, index: s.indexOf(rec)}
	cm.head = append(args, cm.index.String())
	return cm, nil
}

// apply commits: one script on one server, two round trips on a Cluster.
// After a commit that went through, cm.added holds the tasks its script
// added (not pending before), in the order of the commit's effects.
func (s *Store) apply(ctx context.Context, cm *commit) error {
	var err error
	if s.cluster() {
		err = s.applySlot(ctx, cm)
	} else {
		err = s.applyAll(ctx, cm)
	}
	if err == nil {
		grantAdded(cm.c.Lease, cm.rec, cm.c.Effects, cm.added) // outbox.go
	}
	return err
}

func (s *Store) cluster() bool { _, ok := s.c.(*redis.ClusterClient); return ok }

// errLegacyClaim: the connector's claim names a record without an index
// line; the creation takes the connector itself (takeConnector).
var errLegacyClaim = errors.New("connector claim of a record without an index line")

// refused maps a script's refusal to the port's errors.
func (cm *commit) refused(res []any) error {
	id := cm.rec.ID
	switch res[0] {
	case "exists":
		return fmt.Errorf("session %s: %w", id, store.ErrExists)
	case "notfound":
		return fmt.Errorf("session %s: %w", id, store.ErrNotFound)
	case "conflict":
		return fmt.Errorf("session %s at version %v, not %d: %w", id, res[1], cm.c.ExpectedVersion, store.ErrVersionConflict)
	case "busy":
		return fmt.Errorf("charger %s connector %d has session %v: %w", cm.rec.ChargerID, cm.rec.Connector, res[1], store.ErrConnectorBusy)
	case "creating":
		return fmt.Errorf("charger %s connector %d: session %v being created: %w", cm.rec.ChargerID, cm.rec.Connector, res[1], store.ErrConnectorBusy)
	case "connlegacy":
		return errLegacyClaim
	}
	return nil
}

func (s *Store) slotKeys(id string) []string {
	return []string{s.recKey(id), s.histKey(id), s.tasksKey(id), s.whKey(id), s.whQueueKey(id)}
}

// applyAll is the commit on one server: commitAllScript.
func (s *Store) applyAll(ctx context.Context, cm *commit) error {
	id := cm.rec.ID
	keys := append(s.slotKeys(id), s.dueKey(), s.feedKey(), s.feedVerKey(id), s.whDueKey(), s.whStampKey(),
		s.whCounterKey(), s.whLogKey(), s.whPendKey(), s.connKey(cm.rec.ChargerID, cm.rec.Connector))
	keys = append(keys, cm.index.lists...)
	if cm.index.oon != "" {
		keys = append(keys, cm.index.oon)
	}
	args := append(slices.Clip(cm.head), id, member(id, ""), len(cm.index.lists))
	if cm.c.Publish {
		_, fa := s.feedArgs(cm.change())
		args = append(append(args, len(fa)-2), fa[1:]...) // field count, max length, fields
	} else {
		args = append(args, 0)
	}
	var whMs int64
	if len(cm.deliveries) > 0 {
		whMs = store.Millis(cm.deliveries[0].NextAt)
	}
	take := "0"
	if cm.claim != "" {
		take = "1"
	}
	args = append(args, whMs, take, cm.claim, store.Millis(s.opts.Now()), s.opts.ConnectorGrace.Milliseconds(), s.p+":{s:")
	res, err := commitAllScript.Run(ctx, s.c, keys, args...).Slice()
	if err != nil {
		return fmt.Errorf("session %s: commit: %w", id, mapErr(err))
	}
	if err := cm.refused(res); err != nil {
		return err
	}
	cm.added = strs(res[2])
	if legacy, _ := res[1].(string); legacy != "" {
		// The old record predates the index line: tidy what it had from its JSON.
		ctx = context.WithoutCancel(ctx)
		if old, ok := s.legacyIndex(id, legacy); ok {
			s.tidy(ctx, cm, old)
		}
	}
	return nil
}

// applySlot is the commit on a Cluster (see the top of this file).
func (s *Store) applySlot(ctx context.Context, cm *commit) error {
	id := cm.rec.ID
	var sent, script *redis.Cmd
	var scripts scriptCmds
	cmds, _ := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		s.writeAhead(ctx, p, cm, &scripts)
		sent = commitSlotScript.EvalSha(ctx, p, s.slotKeys(id), cm.head...)
		return nil
	})
	script = sent
	if isNoScript(script.Err()) { // a server that lost its scripts: Run loads it
		script = commitSlotScript.Run(ctx, s.c, s.slotKeys(id), cm.head...)
	}
	res, err := script.Slice()
	if err != nil {
		return fmt.Errorf("session %s: commit: %w", id, mapErr(err))
	}
	if err := cm.refused(res); err != nil {
		if len(cm.deliveries) > 0 {
			s.deliveriesAfter(context.WithoutCancel(ctx), id, cm.deliveries, false)
		}
		return err
	}
	// The transition is committed: what follows only completes derived
	// data, so it runs even if the caller's context ends now.
	ctx = context.WithoutCancel(ctx)
	aheadFailed := false
	for _, c := range cmds {
		if c != redis.Cmder(sent) && c.Err() != nil {
			aheadFailed = true
		}
	}
	var old *indexLine
	if line, _ := res[4].(string); line != "" {
		if l, ok := parseIndexLine(line); ok {
			old = &l
		}
	} else if legacy, _ := res[1].(string); legacy != "" {
		if l, ok := s.legacyIndex(id, legacy); ok {
			old = &l
		}
	}
	cm.added = strs(res[2])
	s.followUp(ctx, cm, cm.added, strs(res[3]), old, aheadFailed)
	return nil
}

// writeAhead queues the Cluster write-ahead of cm's derived entries on p.
func (s *Store) writeAhead(ctx context.Context, p redis.Pipeliner, cm *commit, scripts *scriptCmds) {
	id := cm.rec.ID
	for _, d := range cm.deliveries {
		p.ZAdd(ctx, s.whLogKey(), redis.Z{Member: d.LogKey()})
		p.ZAdd(ctx, s.whPendKey(), redis.Z{Member: d.LogKey()})
	}
	if len(cm.deliveries) > 0 {
		scripts.evalSha(ctx, p, wdueTouchScript, []string{s.whDueKey(), s.whStampKey(), s.whCounterKey()},
			id, store.Millis(cm.deliveries[0].NextAt))
	}
	for tid, score := range cm.due {
		// LT: an effect already pending keeps its (earlier) entry
		p.ZAddLT(ctx, s.dueKey(), redis.Z{Score: score, Member: member(id, tid)})
	}
	for _, k := range cm.index.lists {
		p.ZAdd(ctx, k, redis.Z{Member: cm.index.sortKey})
	}
	if cm.index.oon != "" {
		p.Set(ctx, cm.index.oon, id, 0)
	}
}

// followUp is step 2 of a Cluster commit: old is the old record's index line
// (nil for a creation, or when it could not be read).
func (s *Store) followUp(ctx context.Context, cm *commit, added, removed []string, old *indexLine, aheadFailed bool) {
	id := cm.rec.ID
	exact := store.Millis(s.opts.Now().Add(goneRecheck))
	var scripts scriptCmds
	var feed *redis.Cmd
	var stale []string
	cmds, _ := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		if cm.c.Publish {
			keys, args := s.feedArgs(cm.change())
			feed = scripts.evalSha(ctx, p, feedScript, keys, args...)
		}
		if aheadFailed {
			s.writeAhead(ctx, p, cm, &scripts)
		}
		for _, tid := range added {
			// a claim that looked before the script saw no task and moved
			// the entry a little later: put it back (only a task due by
			// then can have been looked at)
			if score := cm.due[tid]; aheadFailed || int64(score) <= exact {
				p.ZAdd(ctx, s.dueKey(), redis.Z{Score: score, Member: member(id, tid)})
			}
		}
		for _, tid := range removed {
			p.ZRem(ctx, s.dueKey(), member(id, tid))
		}
		if len(cm.deliveries) > 0 {
			scripts.evalSha(ctx, p, wdueTouchScript, []string{s.whDueKey(), s.whStampKey(), s.whCounterKey()},
				id, store.Millis(cm.deliveries[0].NextAt))
		}
		if cm.index.conn == "" && (old == nil || old.conn != "") {
			scripts.evalSha(ctx, p, connReleaseScript, []string{s.connKey(cm.rec.ChargerID, cm.rec.Connector)}, id)
		}
		if old != nil {
			stale = s.queueTidy(ctx, p, cm, *old, &scripts)
		}
		return nil
	})
	scripts.rerun(ctx, s.c)
	for _, c := range cmds {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) && !isNoScript(err) {
			s.opts.Logger.Warn("redisstore: index follow-up (the re-index sweep repairs it)", "session", id, "err", err)
			break
		}
	}
	if feed != nil && feed.Err() != nil && !errors.Is(feed.Err(), redis.Nil) {
		s.opts.Logger.Warn("redisstore: feed append lost", "session", id, "version", cm.rec.Version, "err", feed.Err())
	}
	if len(stale) > 0 {
		s.reverify(ctx, id, stale)
	}
}

// tidy removes what the old record had in the indexes and the new one has
// not (the stale list entries, an old out_order_no), then re-checks the
// lists.
func (s *Store) tidy(ctx context.Context, cm *commit, old indexLine) {
	var scripts scriptCmds
	var stale []string
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		stale = s.queueTidy(ctx, p, cm, old, &scripts)
		return nil
	})
	scripts.rerun(ctx, s.c)
	if err != nil && !isNoScript(err) {
		s.opts.Logger.Warn("redisstore: index follow-up", "session", cm.rec.ID, "err", err)
	}
	if len(stale) > 0 {
		s.reverify(ctx, cm.rec.ID, stale)
	}
}

// queueTidy queues on p the removals tidy describes and returns the lists
// an entry was removed from.
func (s *Store) queueTidy(ctx context.Context, p redis.Pipeliner, cm *commit, old indexLine, scripts *scriptCmds) []string {
	id := cm.rec.ID
	var stale []string
	for _, k := range old.lists {
		if old.sortKey != cm.index.sortKey || !slices.Contains(cm.index.lists, k) {
			p.ZRem(ctx, k, old.sortKey)
			stale = append(stale, k)
		}
	}
	if old.oon != "" && old.oon != cm.index.oon {
		scripts.evalSha(ctx, p, casScript, []string{old.oon}, id, "")
	}
	return stale
}

// reverify re-adds list entries just removed that the current record (a
// later commit's) needs after all.
func (s *Store) reverify(ctx context.Context, id string, removed []string) {
	var cur indexLine
	r, err := s.c.HMGet(ctx, s.recKey(id), "v", "i").Result()
	if err != nil || len(r) != 2 {
		return
	}
	v, _ := r[0].(string)
	line, _ := r[1].(string)
	if l, ok := parseIndexLine(line); ok && l.version == v {
		cur = l
	} else { // a record without its line (written by an older store)
		rec, err := s.GetSession(ctx, id)
		if err != nil {
			return
		}
		cur = s.indexOf(rec)
	}
	for _, k := range removed {
		if slices.Contains(cur.lists, k) {
			_ = s.c.ZAdd(ctx, k, redis.Z{Member: cur.sortKey}).Err()
		}
	}
}

func (cm *commit) change() store.Change {
	r := cm.rec
	return store.Change{Kind: store.ChangeSession, SessionID: r.ID, Version: r.Version,
		ChargerID: r.ChargerID, At: r.UpdatedAt, Data: cm.c.ChangeData}
}

// indexLine is what the derived indexes hold for one version of a record
// (see commitHead).
type indexLine struct {
	version string
	conn    string // the connector key while the session is active, else ""
	sortKey string
	oon     string // P:oon:<no>, "" without an out_order_no
	lists   []string
}

func (s *Store) indexOf(rec fsm.Session) indexLine {
	l := indexLine{version: strconv.FormatInt(rec.Version, 10), sortKey: store.SortKey(rec), lists: s.lists(rec)}
	if rec.State.Active() {
		l.conn = s.connKey(rec.ChargerID, rec.Connector)
	}
	if rec.OutOrderNo != "" {
		l.oon = s.oonKey(rec.OutOrderNo)
	}
	return l
}

func (l indexLine) String() string {
	var b strings.Builder
	for _, f := range append([]string{l.version, l.conn, l.sortKey, l.oon}, l.lists...) {
		b.WriteString(f)
		b.WriteByte('\n')
	}
	return b.String()
}

func parseIndexLine(s string) (indexLine, bool) {
	f := strings.Split(s, "\n")
	if len(f) < 5 || f[len(f)-1] != "" || f[0] == "" {
		return indexLine{}, false
	}
	return indexLine{version: f[0], conn: f[1], sortKey: f[2], oon: f[3], lists: f[4 : len(f)-1]}, true
}

// legacyIndex is the index line of an old record read as JSON.
func (s *Store) legacyIndex(id, oldJSON string) (indexLine, bool) {
	o, err := store.DecodeSession(s.recKey(id), []byte(oldJSON))
	if err != nil {
		s.opts.Logger.Warn("redisstore: previous record unreadable; its index entries stay (readers skip them)", "session", id, "err", err)
		return indexLine{}, false
	}
	return s.indexOf(o), true
}

// scriptCmds remembers the scripts queued as EVALSHA in a pipeline, where
// go-redis does not fall back to EVAL: rerun sends
// those a server answered NOSCRIPT (it restarted, or is a promoted replica)
// again with Script.Run, which does.
type scriptCmds []scriptCmd

type scriptCmd struct {
	cmd  *redis.Cmd
	sc   *redis.Script
	keys []string
	args []any
}

func (q *scriptCmds) evalSha(ctx context.Context, p redis.Pipeliner, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := sc.EvalSha(ctx, p, keys, args...)
	*q = append(*q, scriptCmd{c, sc, keys, args})
	return c
}

func (q scriptCmds) rerun(ctx context.Context, c redis.Scripter) {
	for _, x := range q {
		if isNoScript(x.cmd.Err()) {
			r := x.sc.Run(ctx, c, x.keys, x.args...)
			x.cmd.SetVal(r.Val())
			x.cmd.SetErr(r.Err())
		}
	}
}

func isNoScript(err error) bool { return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") }
