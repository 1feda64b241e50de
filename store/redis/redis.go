// Package redisstore is the store.Store on Redis (go-redis/v9), for a single
// node, Sentinel or Cluster alike: the client is a redis.UniversalClient
// chosen from the URL (see New).
//
// # Key layout (P is Options.Prefix)
//
// One session's own keys share the hash tag {s:<id>}, so one Lua script can
// change them together even on Cluster:
//
//	P:{s:<id>}       hash  v = version, d = record JSON
//	P:{s:<id>}:h     list  history entries (JSON), oldest first
//	P:{s:<id>}:t     hash  the session's outbox: e:<task> effect JSON,
//	                       m:<task> "due ms\nlease-until ms\nattempts\nlease token",
//	                       x:<task> last error
//
// Global indexes live in other slots:
//
//	P:{due}          zset  member "<len(session)>:<session><task>", score = the
//	                       ms at which the task next needs a look (due, or lease end)
//	P:{due}:gone     zset  members whose task was not found, score = when first seen
//	P:oon:<no>       string  out_order_no → session id
//	P:conn:{<charger>}:<n>  string  "<session id>|<ms taken>" (the connector's active session)
//	P:ls:a, P:ls:s:<state>, P:ls:f:<flag>, P:ls:c:<charger>
//	                 zsets of SortKey members (score 0, read BYLEX REV): the lists
//	P:idem:<key>     hash  an Idempotency-Key record (h, s, b, sid, exp), Redis TTL = ttl
//	P:done:<scope>:<key>  string  expiry ms, Redis TTL = ttl
//	P:chargers, P:tariffs  hashes id → JSON
//	P:anomalies      stream (MAXLEN ~ Options.MaxAnomalies)
//	P:{feed}         stream of changes (MAXLEN ~ Options.MaxChanges);
//	P:{feed}:v:<id>  the last version of a session appended (a day's TTL)
//
// # Why it is safe on Cluster
//
// The commit is one script on the session's slot: the compare-and-set of the
// version, the record, the history and the outbox tasks (disarms included)
// happen together or not at all; that is the transaction the engine relies on.
// A script cannot also touch the global indexes on Cluster (other slots), so
// they are DERIVED data, written around the script in an order that makes a
// crash between steps harmless, and every reader verifies an index hit
// against the record:
//
//   - Write-ahead: before the script, the new tasks are added to P:{due} and
//     the new record to its list sets and P:oon. If the script then fails or
//     the process dies, the extra entries point at nothing (or at a record
//     that does not match) and are skipped or cleaned up by readers.
//   - After the script: the tasks it really added are indexed again,
//     the disarmed ones and the memberships the old record had and the new one
//     lacks are removed; a removal is followed by a re-read of the record and
//     a re-add if a later commit needs the entry again, so crossing commits of
//     two processes can leave a stale entry (skipped by readers) but never
//     lose one.
//   - Claim reads P:{due} and asks the session's slot (claimScript) about each
//     entry: a task due and not under a live lease is leased in that script,
//     and its entry moved to the lease's end, so a crashed worker's task comes
//     back; an entry whose time is not yet come gets its true time; an entry
//     whose task is not found is kept and looked at again a second later, its
//     first sighting noted in P:{due}:gone, and dropped after
//     Options.GoneGrace if its task still does not exist (the write-ahead of a
//     commit still in flight looks exactly like a gone task for a moment).
//     Entries only ever race towards an earlier score than needed, which
//     costs a look, never a late timer.
//   - ReleaseLeases finds leased tasks by their entries after now (a lease's
//     end; timers not yet due sit there too and are told apart by their
//     metadata), walking P:{due} with ZSCAN. Per session, releaseScript
//     clears the matching live leases in that session's slot; only then is
//     each entry moved back to its task's due time (ZADD LT). A crash between
//     the two leaves an entry late by at most the lease (what happened
//     before the call); the next ReleaseLeases moves any entry it finds later
//     than its unleased task's due time back, so calling it again repairs it.
//   - Connector exclusivity: CreateSession takes P:conn:{charger}:<n> with a
//     compare-and-set before the create script. A taken key is verified: its
//     session must exist, be active and be on that connector, else the key is
//     stale (that session ended, or its creation died) and is taken over. A
//     key naming a session that does not exist yet is respected for
//     Options.ConnectorGrace, the time a creation can be in flight.
//   - The feed is appended after the script, in the follow-up pipeline (a change must never announce a
//     version that lost its compare-and-set). A crash between the two loses
//     that one live-board update, never session data: the record and history
//     are the truth and the next change carries the full snapshot. Appends of
//     two processes for one session cannot go back in versions (feedScript).
//
// On a single node or Sentinel all of this also holds; nothing depends on
// keyspace notifications. Scripts are loaded at start-up and run with
// Script.Run (EVALSHA, falling back to EVAL after a server restart), never
// inside pipelines. Stream reads use a finite BLOCK in a loop.
package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/store"
)

// Options configure the store; zero values take the defaults.
type Options struct {
	// Prefix namespaces every key (tests sharing a Redis use
	// testenv.Namespace). Default "chargeflow". No braces.
	Prefix string
	// Cluster forces Cluster mode for a single address (the URL may also say
	// `cluster=true`, or list more nodes with `addr=`).
	Cluster bool
	// Now is the clock for expiries and connector claims. Default time.Now.
	Now func() time.Time
	// MaxChanges and MaxAnomalies bound the streams (approximately).
	// Defaults 50000 and 10000.
	MaxChanges   int64
	MaxAnomalies int64
	// ConnectorGrace is how long a connector claim naming a session not yet
	// created is respected. Default 30s.
	ConnectorGrace time.Duration
	// GoneGrace is how long an outbox index entry without a task is kept
	// before it is dropped. Default 30s.
	GoneGrace time.Duration
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.Prefix == "" {
		o.Prefix = "chargeflow"
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
	if o.ConnectorGrace <= 0 {
		o.ConnectorGrace = 30 * time.Second
	}
	if o.GoneGrace <= 0 {
		o.GoneGrace = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Store is the Redis adapter. It is safe for concurrent use by any number of
// goroutines and processes. It starts no goroutines of its own.
type Store struct {
	c    redis.UniversalClient
	opts Options
	p    string

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// NewClient builds the client the URL asks for:
//
//	redis://[user:pass@]host:port/db           a single node
//	rediss://…                                 the same over TLS
//	redis://host:port?master_name=m&addr=…     Sentinel (the hosts are sentinels)
//	redis://host:port?addr=…&addr=…            Cluster (seed nodes)
//	redis://host:port?cluster=true             Cluster via one address
//
// Other query parameters are go-redis's (dial_timeout, pool_size, …).
func NewClient(rawURL string, forceCluster bool) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	q := u.Query()
	cluster := forceCluster || len(q["addr"]) > 0
	if v := q.Get("cluster"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("redis url: cluster=%q: %w", v, err)
		}
		cluster = cluster || b
		q.Del("cluster")
		u.RawQuery = q.Encode()
	}
	switch {
	case q.Get("master_name") != "":
		o, err := redis.ParseFailoverURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("redis url: %w", err)
		}
		return redis.NewFailoverClient(o), nil
	case cluster:
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("redis url: %w", err)
		}
		return redis.NewClusterClient(o), nil
	default:
		o, err := redis.ParseURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("redis url: %w", err)
		}
		return redis.NewClient(o), nil
	}
}

// New connects to the Redis the URL names (see NewClient), checks it answers
// and loads the scripts. A Redis that does not answer is ErrUnavailable.
func New(ctx context.Context, rawURL string, opts Options) (*Store, error) {
	opts.defaults()
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, fmt.Errorf("%w: redis prefix %q contains a brace", store.ErrInvalid, opts.Prefix)
	}
	c, err := NewClient(rawURL, opts.Cluster)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	s := &Store{c: c, opts: opts, p: opts.Prefix}
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("redis ping: %w", mapErr(err))
	}
	for _, sc := range allScripts {
		if err := sc.Load(ctx, c).Err(); err != nil {
			c.Close()
			return nil, fmt.Errorf("redis script load: %w", mapErr(err))
		}
	}
	s.followTopology() // watch.go: a Cluster client learns of a failover at once, not up to 60 s later
	return s, nil
}

// Client is the underlying client (for the bench's PING baseline).
func (s *Store) Client() redis.UniversalClient { return s.c }

// Close closes the client. Idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.c.Close() })
	return s.closeErr
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error { return mapErr(s.c.Ping(ctx).Err()) }

// mapErr marks errors: a closed client is ErrClosed; connection trouble, a
// failover or a loading server is ErrUnavailable (retryable).
func mapErr(err error) error {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("%w: %w", store.ErrClosed, err)
	}
	var ne net.Error
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) ||
		errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrPoolExhausted) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "NOREPLICAS", "MOVED", "ASK"} {
		if redis.HasErrorPrefix(err, p) {
			return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
	}
	return err
}

// ---- keys ----

func (s *Store) recKey(id string) string   { return s.p + ":{s:" + id + "}" }
func (s *Store) histKey(id string) string  { return s.p + ":{s:" + id + "}:h" }
func (s *Store) tasksKey(id string) string { return s.p + ":{s:" + id + "}:t" }
func (s *Store) dueKey() string            { return s.p + ":{due}" }
func (s *Store) goneKey() string           { return s.p + ":{due}:gone" }
func (s *Store) oonKey(no string) string   { return s.p + ":oon:" + no }
func (s *Store) connKey(charger string, n int) string {
	return s.p + ":conn:{" + charger + "}:" + strconv.Itoa(n)
}
func (s *Store) listKey(kind, value string) string {
	if kind == "a" {
		return s.p + ":ls:a"
	}
	return s.p + ":ls:" + kind + ":" + value
}
func (s *Store) idemKey(k string) string        { return s.p + ":idem:" + k }
func (s *Store) doneKey(scope, k string) string { return s.p + ":done:" + scope + ":" + k }
func (s *Store) chargersKey() string            { return s.p + ":chargers" }
func (s *Store) tariffsKey() string             { return s.p + ":tariffs" }
func (s *Store) anomaliesKey() string           { return s.p + ":anomalies" }
func (s *Store) feedKey() string                { return s.p + ":{feed}" }
func (s *Store) feedVerKey(id string) string    { return s.p + ":{feed}:v:" + id }

// SessionKey is the key of a session's record (for tests and operators).
func (s *Store) SessionKey(id string) string { return s.recKey(id) }

func member(session, task string) string {
	return strconv.Itoa(len(session)) + ":" + session + task
}

func splitMember(m string) (session, task string, ok bool) {
	i := strings.IndexByte(m, ':')
	if i < 0 {
		return "", "", false
	}
	n, err := strconv.Atoi(m[:i])
	if err != nil || n < 0 || i+1+n > len(m) {
		return "", "", false
	}
	return m[i+1 : i+1+n], m[i+1+n:], true
}

// lists returns the list keys a record belongs to.
func (s *Store) lists(sess fsm.Session) []string {
	keys := []string{s.listKey("a", ""), s.listKey("s", string(sess.State)), s.listKey("c", sess.ChargerID)}
	for _, f := range sess.Flags {
		keys = append(keys, s.listKey("f", string(f)))
	}
	return keys
}

func meta(dueMs int64) string { return strconv.FormatInt(dueMs, 10) + "\n0\n0\n" }

// ---- sessions ----

// CreateSession implements store.Store.
func (s *Store) CreateSession(ctx context.Context, c store.Commit) error {
	rec, err := store.CheckCommit(c, true)
	if err != nil {
		return err
	}
	var connVal string
	if rec.State.Active() {
		if connVal, err = s.takeConnector(ctx, rec); err != nil {
			return err
		}
	}
	err = s.apply(ctx, "create", c, rec)
	if err != nil && connVal != "" {
		// release our claim (only if it is still ours)
		if e := casScript.Run(context.WithoutCancel(ctx), s.c, []string{s.connKey(rec.ChargerID, rec.Connector)}, connVal, "").Err(); e != nil {
			s.opts.Logger.Warn("redisstore: release connector claim", "session", rec.ID, "err", e)
		}
	}
	return err
}

// takeConnector claims the connector for rec (see the package doc) and
// returns the value written.
func (s *Store) takeConnector(ctx context.Context, rec fsm.Session) (string, error) {
	key := s.connKey(rec.ChargerID, rec.Connector)
	now := s.opts.Now()
	mine := rec.ID + "|" + strconv.FormatInt(store.Millis(now), 10)
	for range 5 {
		cur, err := s.c.Get(ctx, key).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return "", mapErr(err)
		}
		if cur != "" {
			id, at, _ := strings.Cut(cur, "|")
			if id == rec.ID {
				return cur, nil // our own earlier attempt
			}
			other, err := s.GetSession(ctx, id)
			switch {
			case err == nil:
				if other.State.Active() && other.ChargerID == rec.ChargerID && other.Connector == rec.Connector {
					return "", fmt.Errorf("charger %s connector %d has session %s: %w", rec.ChargerID, rec.Connector, id, store.ErrConnectorBusy)
				}
			case errors.Is(err, store.ErrNotFound):
				ms, _ := strconv.ParseInt(at, 10, 64)
				if store.FromMillis(ms).Add(s.opts.ConnectorGrace).After(now) {
					return "", fmt.Errorf("charger %s connector %d: session %s being created: %w", rec.ChargerID, rec.Connector, id, store.ErrConnectorBusy)
				}
			default:
				return "", err
			}
		}
		ok, err := casScript.Run(ctx, s.c, []string{key}, cur, mine).Int()
		if err != nil {
			return "", mapErr(err)
		}
		if ok == 1 {
			return mine, nil
		}
	}
	return "", fmt.Errorf("charger %s connector %d: contended: %w", rec.ChargerID, rec.Connector, store.ErrConnectorBusy)
}

// Commit implements store.Store.
func (s *Store) Commit(ctx context.Context, c store.Commit) error {
	rec, err := store.CheckCommit(c, false)
	if err != nil {
		return err
	}
	return s.apply(ctx, "commit", c, rec)
}

// apply runs the write-ahead, the session script and the follow-up.
func (s *Store) apply(ctx context.Context, mode string, c store.Commit, rec fsm.Session) error {
	data, err := store.MarshalSession(rec)
	if err != nil {
		return err
	}
	args := []any{mode, c.ExpectedVersion, rec.Version, data, len(c.History)}
	for _, h := range c.History {
		b, err := json.Marshal(h)
		if err != nil {
			return err
		}
		args = append(args, b)
	}
	args = append(args, len(c.Effects))
	due := map[string]float64{} // task → score, for the index
	for _, e := range c.Effects {
		if e.Kind == fsm.EffDisarmTimer {
			args = append(args, "d", e.TimerID)
			continue
		}
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		ms := store.Millis(store.TaskDue(e, rec))
		args = append(args, "a", e.ID, b, meta(ms))
		due[e.ID] = float64(ms)
	}

	// write-ahead of the derived indexes
	_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for id, score := range due {
			// LT: an effect already pending keeps its (earlier) entry
			p.ZAddLT(ctx, s.dueKey(), redis.Z{Score: score, Member: member(rec.ID, id)})
		}
		for _, k := range s.lists(rec) {
			p.ZAdd(ctx, k, redis.Z{Member: store.SortKey(rec)})
		}
		if rec.OutOrderNo != "" {
			p.Set(ctx, s.oonKey(rec.OutOrderNo), rec.ID, 0)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("session %s: index write-ahead: %w", rec.ID, mapErr(err))
	}

	res, err := commitScript.Run(ctx, s.c, []string{s.recKey(rec.ID), s.histKey(rec.ID), s.tasksKey(rec.ID)}, args...).Slice()
	if err != nil {
		return fmt.Errorf("session %s: commit: %w", rec.ID, mapErr(err))
	}
	switch res[0] {
	case "exists":
		return fmt.Errorf("session %s: %w", rec.ID, store.ErrExists)
	case "notfound":
		return fmt.Errorf("session %s: %w", rec.ID, store.ErrNotFound)
	case "conflict":
		return fmt.Errorf("session %s at version %v, not %d: %w", rec.ID, res[1], c.ExpectedVersion, store.ErrVersionConflict)
	}
	oldJSON, _ := res[1].(string)
	added, removed := strs(res[2]), strs(res[3])

	// The transition is committed: what follows only tidies derived data, so
	// it runs even if the caller's context ends now.
	ctx = context.WithoutCancel(ctx)
	var old *fsm.Session
	if oldJSON != "" {
		o, err := store.DecodeSession(s.recKey(rec.ID), []byte(oldJSON))
		if err != nil {
			s.opts.Logger.Warn("redisstore: previous record unreadable; its index entries stay (readers skip them)", "session", rec.ID, "err", err)
		} else {
			old = &o
		}
	}
	var stale []string
	if old != nil {
		now := s.lists(rec)
		for _, k := range s.lists(*old) {
			if !slices.Contains(now, k) {
				stale = append(stale, k)
			}
		}
	}
	var change store.Change
	var feedCmd *redis.Cmd
	if c.Publish {
		change = store.Change{Kind: store.ChangeSession, SessionID: rec.ID, Version: rec.Version,
			ChargerID: rec.ChargerID, At: rec.UpdatedAt, Data: c.ChangeData}
	}
	_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		if c.Publish {
			// EVALSHA in a pipeline does not fall back to EVAL: a NOSCRIPT
			// (server restarted) is retried below with Script.Run.
			keys, args := s.feedArgs(change)
			feedCmd = feedScript.EvalSha(ctx, p, keys, args...)
		}
		for _, id := range added {
			p.ZAdd(ctx, s.dueKey(), redis.Z{Score: due[id], Member: member(rec.ID, id)})
		}
		for _, id := range removed {
			p.ZRem(ctx, s.dueKey(), member(rec.ID, id))
		}
		for _, k := range stale {
			p.ZRem(ctx, k, store.SortKey(rec))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		s.opts.Logger.Warn("redisstore: index follow-up", "session", rec.ID, "err", err)
	}
	if len(stale) > 0 {
		s.reverify(ctx, rec.ID, stale)
	}
	if !rec.State.Active() && (old == nil || old.State.Active()) {
		key := s.connKey(rec.ChargerID, rec.Connector)
		if cur, err := s.c.Get(ctx, key).Result(); err == nil && strings.HasPrefix(cur, rec.ID+"|") {
			_ = casScript.Run(ctx, s.c, []string{key}, cur, "").Err()
		}
	}
	if old != nil && old.OutOrderNo != "" && old.OutOrderNo != rec.OutOrderNo {
		_ = casScript.Run(ctx, s.c, []string{s.oonKey(old.OutOrderNo)}, rec.ID, "").Err()
	}
	if feedCmd != nil && feedCmd.Err() != nil && !errors.Is(feedCmd.Err(), redis.Nil) {
		if err := s.publish(ctx, change); err != nil {
			s.opts.Logger.Warn("redisstore: feed append lost", "session", rec.ID, "version", rec.Version, "err", err)
		}
	}
	return nil
}

// reverify re-adds list entries just removed that the current record (a
// later commit's) needs after all.
func (s *Store) reverify(ctx context.Context, id string, removed []string) {
	cur, err := s.GetSession(ctx, id)
	if err != nil {
		return
	}
	need := s.lists(cur)
	for _, k := range removed {
		if slices.Contains(need, k) {
			_ = s.c.ZAdd(ctx, k, redis.Z{Member: store.SortKey(cur)}).Err()
		}
	}
}

func strs(v any) []string {
	xs, _ := v.([]any)
	out := make([]string, 0, len(xs))
	for _, x := range xs {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// GetSession implements store.Store.
func (s *Store) GetSession(ctx context.Context, id string) (fsm.Session, error) {
	b, err := s.c.HGet(ctx, s.recKey(id), "d").Bytes()
	if errors.Is(err, redis.Nil) {
		return fsm.Session{}, fmt.Errorf("session %s: %w", id, store.ErrNotFound)
	} else if err != nil {
		return fsm.Session{}, fmt.Errorf("session %s: %w", id, mapErr(err))
	}
	return store.DecodeSession(s.recKey(id), b)
}

// History implements store.Store.
func (s *Store) History(ctx context.Context, id string) ([]fsm.HistoryEntry, error) {
	raw, err := s.c.LRange(ctx, s.histKey(id), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("history %s: %w", id, mapErr(err))
	}
	if len(raw) == 0 {
		if n, err := s.c.Exists(ctx, s.recKey(id)).Result(); err != nil {
			return nil, mapErr(err)
		} else if n == 0 {
			return nil, fmt.Errorf("session %s: %w", id, store.ErrNotFound)
		}
	}
	out := make([]fsm.HistoryEntry, len(raw))
	for i, r := range raw {
		if err := store.DecodeJSON(fmt.Sprintf("%s[%d]", s.histKey(id), i), []byte(r), &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// SessionByOutOrderNo implements store.Store.
func (s *Store) SessionByOutOrderNo(ctx context.Context, no string) (fsm.Session, error) {
	id, err := s.c.Get(ctx, s.oonKey(no)).Result()
	if errors.Is(err, redis.Nil) {
		return fsm.Session{}, fmt.Errorf("out_order_no %s: %w", no, store.ErrNotFound)
	} else if err != nil {
		return fsm.Session{}, mapErr(err)
	}
	sess, err := s.GetSession(ctx, id)
	if err != nil {
		return sess, err
	}
	if sess.OutOrderNo != no { // a stale write-ahead
		return fsm.Session{}, fmt.Errorf("out_order_no %s: %w", no, store.ErrNotFound)
	}
	return sess, nil
}

// ActiveSession implements store.Store.
func (s *Store) ActiveSession(ctx context.Context, chargerID string, connector int) (fsm.Session, error) {
	v, err := s.c.Get(ctx, s.connKey(chargerID, connector)).Result()
	if errors.Is(err, redis.Nil) {
		return fsm.Session{}, fmt.Errorf("active session of %s/%d: %w", chargerID, connector, store.ErrNotFound)
	} else if err != nil {
		return fsm.Session{}, mapErr(err)
	}
	id, _, _ := strings.Cut(v, "|")
	sess, err := s.GetSession(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (!sess.State.Active() || sess.ChargerID != chargerID || sess.Connector != connector)) {
		return fsm.Session{}, fmt.Errorf("active session of %s/%d: %w", chargerID, connector, store.ErrNotFound)
	}
	return sess, err
}

const maxScan = 5000

// ListSessions implements store.Store: the most selective list given is read
// newest first; every hit is checked against its record.
func (s *Store) ListSessions(ctx context.Context, f store.Filter) (store.Page, error) {
	limit, err := f.PageLimit()
	if err != nil {
		return store.Page{}, err
	}
	after, err := store.DecodeCursor(f.Cursor)
	if err != nil {
		return store.Page{}, err
	}
	key := s.listKey(f.Index())
	var page store.Page
	last, scanned := after, 0
	for scanned < maxScan {
		max := "+"
		if last != "" {
			max = "(" + last
		}
		batch := int64(min(limit+1, maxScan-scanned))
		keys, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: key, Start: max, Stop: "-", ByLex: true, Rev: true, Count: batch}).Result()
		if err != nil {
			return store.Page{}, mapErr(err)
		}
		cmds := make([]*redis.StringCmd, len(keys))
		if len(keys) > 0 {
			_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i, k := range keys {
					cmds[i] = p.HGet(ctx, s.recKey(store.SortKeyID(k)), "d")
				}
				return nil
			})
			if err != nil && !errors.Is(err, redis.Nil) {
				return store.Page{}, mapErr(err)
			}
		}
		for i, k := range keys {
			if len(page.Sessions) == limit {
				page.NextCursor = store.EncodeCursor(last)
				return page, nil
			}
			last = k
			scanned++
			b, err := cmds[i].Bytes()
			if errors.Is(err, redis.Nil) {
				continue
			} else if err != nil {
				return store.Page{}, mapErr(err)
			}
			id := store.SortKeyID(k)
			sess, err := store.DecodeSession(s.recKey(id), b)
			if err != nil {
				return store.Page{}, err
			}
			if f.Matches(sess) && store.SortKey(sess) == k {
				page.Sessions = append(page.Sessions, sess)
			}
		}
		if int64(len(keys)) < batch {
			return page, nil // the end of the list
		}
	}
	page.NextCursor = store.EncodeCursor(last)
	return page, nil
}

// CountByState implements store.Store.
func (s *Store) CountByState(ctx context.Context) (map[fsm.State]int, error) {
	cmds := map[fsm.State]*redis.IntCmd{}
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, st := range fsm.States {
			cmds[st] = p.ZCard(ctx, s.listKey("s", string(st)))
		}
		return nil
	})
	if err != nil {
		return nil, mapErr(err)
	}
	out := map[fsm.State]int{}
	for st, c := range cmds {
		out[st] = int(c.Val())
	}
	return out, nil
}

// ---- outbox ----

// Claim implements store.Store. It looks at up to 4*max due index entries
// per call, so it may return fewer than max tasks while more are due; the
// caller polls again.
func (s *Store) Claim(ctx context.Context, now time.Time, owner string, lease time.Duration, max int) ([]store.Task, error) {
	if max <= 0 || lease <= 0 || owner == "" {
		return nil, fmt.Errorf("%w: claim needs an owner, a lease and max > 0", store.ErrInvalid)
	}
	nowMs := store.Millis(now)
	if err := s.sweepGone(ctx, nowMs); err != nil {
		return nil, err
	}
	entries, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.dueKey(), Start: "-inf", Stop: strconv.FormatInt(nowMs, 10),
		ByScore: true, Count: int64(4 * max)}).Result()
	if err != nil {
		return nil, mapErr(err)
	}
	// group by session, keeping due order
	var order []string
	bySession := map[string][]string{}
	for _, m := range entries {
		sess, task, ok := splitMember(m)
		if !ok {
			_ = s.c.ZRem(ctx, s.dueKey(), m).Err()
			continue
		}
		if _, seen := bySession[sess]; !seen {
			order = append(order, sess)
		}
		bySession[sess] = append(bySession[sess], task)
	}
	untilMs := store.Millis(now.Add(lease))
	var out []store.Task
	for _, sess := range order {
		if len(out) == max {
			break
		}
		tasks := bySession[sess]
		if room := max - len(out); len(tasks) > room {
			tasks = tasks[:room] // the port promises at most max
		}
		token := store.LeaseToken(owner, randomBytes())
		args := []any{nowMs, token, untilMs}
		for _, t := range tasks {
			args = append(args, t)
		}
		res, err := claimScript.Run(ctx, s.c, []string{s.tasksKey(sess)}, args...).Slice()
		if err != nil {
			return out, mapErr(err) // leases taken so far come back after the lease
		}
		for _, r := range res {
			row, _ := r.([]any)
			if len(row) < 2 {
				continue
			}
			tid, _ := row[0].(string)
			mem := member(sess, tid)
			switch row[1] {
			case "claimed":
				var t store.Task
				effJSON, _ := row[2].(string)
				if err := json.Unmarshal([]byte(effJSON), &t.Effect); err != nil {
					return out, store.Corrupt(s.tasksKey(sess)+" e:"+tid, err)
				}
				dueS, _ := row[3].(string)
				attS, _ := row[4].(string)
				t.LastError, _ = row[5].(string)
				dueMs, _ := strconv.ParseInt(dueS, 10, 64)
				t.Attempts, _ = strconv.Atoi(attS)
				t.ID, t.SessionID, t.DueAt = tid, sess, store.FromMillis(dueMs)
				t.Owner, t.Lease, t.LeaseUntil = owner, token, store.FromMillis(untilMs)
				if err := s.c.ZAdd(ctx, s.dueKey(), redis.Z{Score: float64(untilMs), Member: mem}).Err(); err != nil {
					return append(out, t), mapErr(err)
				}
				out = append(out, t)
			case "later":
				nx, _ := row[2].(string)
				score, _ := strconv.ParseFloat(nx, 64)
				_ = s.c.ZAddXX(ctx, s.dueKey(), redis.Z{Score: score, Member: mem}).Err()
			case "gone":
				// Maybe a commit still in flight (its write-ahead entry came
				// before its script), maybe a commit that died. Keep the
				// entry and look again shortly; remember when it was first
				// seen so that sweepGone drops it after the grace if its
				// task never appears. Removing it here would lose a task
				// whose commit lands in between (its follow-up re-add can
				// run before this pipeline) until the grace.
				_, _ = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
					p.ZAddXX(ctx, s.dueKey(), redis.Z{Score: float64(nowMs + goneRecheck.Milliseconds()), Member: mem})
					p.ZAddNX(ctx, s.goneKey(), redis.Z{Score: float64(nowMs), Member: mem})
					return nil
				})
			case "corrupt":
				return out, store.Corrupt(s.tasksKey(sess)+" m:"+tid, errors.New("bad task metadata"))
			}
		}
	}
	return out, nil
}

// sweepGone drops index entries whose task has been missing for GoneGrace,
// and puts back those whose task appeared after all.
// goneRecheck is how soon an entry whose task was not found is looked at
// again.
const goneRecheck = time.Second

// sweepGone settles the entries first seen without their task more than
// GoneGrace ago: a task that exists by now keeps (or gets back) its due entry;
// one that still does not exist loses it.
func (s *Store) sweepGone(ctx context.Context, nowMs int64) error {
	limit := nowMs - s.opts.GoneGrace.Milliseconds()
	gone, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.goneKey(), Start: "-inf", Stop: strconv.FormatInt(limit, 10),
		ByScore: true, Count: 100}).Result()
	if err != nil {
		return mapErr(err)
	}
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

func randomBytes() []byte {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return b
}

func (s *Store) settle(ctx context.Context, t store.Task, mode string, nextDue time.Time, errText string) error {
	ms := store.Millis(nextDue)
	r, err := settleScript.Run(ctx, s.c, []string{s.tasksKey(t.SessionID)}, mode, t.ID, t.Lease, ms, errText).Text()
	if err != nil {
		return fmt.Errorf("task %s: %w", t.ID, mapErr(err))
	}
	if r != "ok" {
		return fmt.Errorf("task %s: %w", t.ID, store.ErrLeaseLost)
	}
	ctx = context.WithoutCancel(ctx)
	mem := member(t.SessionID, t.ID)
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
		t := store.Task{ID: tid, SessionID: sessionID, DueAt: store.FromMillis(due), Attempts: att,
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

// ---- idempotency ----

// PutIdempotency implements store.Store.
func (s *Store) PutIdempotency(ctx context.Context, key, requestHash string, ttl time.Duration) (store.IdemRecord, bool, error) {
	if key == "" || ttl <= 0 {
		return store.IdemRecord{}, false, fmt.Errorf("%w: idempotency needs a key and a ttl", store.ErrInvalid)
	}
	now := s.opts.Now()
	exp := store.Millis(now.Add(ttl))
	res, err := idemPutScript.Run(ctx, s.c, []string{s.idemKey(key)}, store.Millis(now), exp, requestHash, max(ttl.Milliseconds(), 1)).Slice()
	if err != nil {
		return store.IdemRecord{}, false, mapErr(err)
	}
	if n, _ := res[0].(int64); n == 1 {
		return store.IdemRecord{RequestHash: requestHash, ExpiresAt: store.FromMillis(exp)}, true, nil
	}
	str := func(i int) string { v, _ := res[i].(string); return v }
	status, _ := strconv.Atoi(str(2))
	e, _ := strconv.ParseInt(str(5), 10, 64)
	rec := store.IdemRecord{RequestHash: str(1), Status: status, SessionID: str(4), ExpiresAt: store.FromMillis(e)}
	if b := str(3); b != "" {
		rec.Body = []byte(b)
	}
	return rec, false, nil
}

// SaveIdempotentResponse implements store.Store.
func (s *Store) SaveIdempotentResponse(ctx context.Context, key string, rec store.IdemRecord) error {
	r, err := idemSaveScript.Run(ctx, s.c, []string{s.idemKey(key)}, store.Millis(s.opts.Now()), rec.RequestHash,
		rec.Status, rec.Body, rec.SessionID).Text()
	if err != nil {
		return mapErr(err)
	}
	switch r {
	case "notfound":
		return fmt.Errorf("idempotency key %s: %w", key, store.ErrNotFound)
	case "conflict":
		return fmt.Errorf("idempotency key %s: other request: %w", key, store.ErrConflict)
	}
	return nil
}

// DeleteIdempotency implements store.Store.
func (s *Store) DeleteIdempotency(ctx context.Context, key string) error {
	return mapErr(s.c.Del(ctx, s.idemKey(key)).Err())
}

// MarkProcessed implements store.Store.
func (s *Store) MarkProcessed(ctx context.Context, scope, key string, ttl time.Duration) (bool, error) {
	if key == "" || ttl <= 0 {
		return false, fmt.Errorf("%w: processed mark needs a key and a ttl", store.ErrInvalid)
	}
	now := store.Millis(s.opts.Now())
	n, err := markScript.Run(ctx, s.c, []string{s.doneKey(scope, key)}, now, now+ttl.Milliseconds(), max(ttl.Milliseconds(), 1)).Int()
	if err != nil {
		return false, mapErr(err)
	}
	return n == 1, nil
}

// ---- chargers, tariffs ----

// PutCharger implements store.Store.
func (s *Store) PutCharger(ctx context.Context, c store.Charger) error {
	if c.ID == "" {
		return fmt.Errorf("%w: charger without id", store.ErrInvalid)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return mapErr(s.c.HSet(ctx, s.chargersKey(), c.ID, b).Err())
}

// GetCharger implements store.Store.
func (s *Store) GetCharger(ctx context.Context, id string) (store.Charger, error) {
	c, _, err := s.getCharger(ctx, id)
	return c, err
}

func (s *Store) getCharger(ctx context.Context, id string) (store.Charger, string, error) {
	var c store.Charger
	raw, err := s.c.HGet(ctx, s.chargersKey(), id).Result()
	if errors.Is(err, redis.Nil) {
		return c, "", fmt.Errorf("charger %s: %w", id, store.ErrNotFound)
	} else if err != nil {
		return c, "", mapErr(err)
	}
	err = store.DecodeJSON(s.chargersKey()+" "+id, []byte(raw), &c)
	return c, raw, err
}

// ListChargers implements store.Store.
func (s *Store) ListChargers(ctx context.Context) ([]store.Charger, error) {
	h, err := s.c.HGetAll(ctx, s.chargersKey()).Result()
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]store.Charger, 0, len(h))
	for id, raw := range h {
		var c store.Charger
		if err := store.DecodeJSON(s.chargersKey()+" "+id, []byte(raw), &c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b store.Charger) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// UpdateCharger implements store.Store: read, fn, compare-and-set, repeated
// while another writer got in between (fn may run more than once).
func (s *Store) UpdateCharger(ctx context.Context, id string, fn func(c *store.Charger) ([]byte, error)) (store.Charger, error) {
	for attempt := 0; ; attempt++ {
		c, raw, err := s.getCharger(ctx, id)
		if err != nil {
			return c, err
		}
		data, err := fn(&c)
		if err != nil {
			return c, err
		}
		c.ID = id
		b, err := json.Marshal(c)
		if err != nil {
			return c, err
		}
		ok, err := hcasScript.Run(ctx, s.c, []string{s.chargersKey()}, id, raw, b).Int()
		if err != nil {
			return c, mapErr(err)
		}
		if ok == 1 {
			if data != nil {
				if err := s.publish(context.WithoutCancel(ctx), store.Change{Kind: store.ChangeCharger, ChargerID: id, At: c.UpdatedAt, Data: data}); err != nil {
					s.opts.Logger.Warn("redisstore: feed append lost", "charger", id, "err", err)
				}
			}
			return c, nil
		}
		if attempt == 100 {
			return c, fmt.Errorf("charger %s: update contended: %w", id, store.ErrUnavailable)
		}
		if err := ctx.Err(); err != nil {
			return c, err
		}
	}
}

// PutTariff implements store.Store.
func (s *Store) PutTariff(ctx context.Context, t money.Tariff) error {
	if t.ID == "" {
		return fmt.Errorf("%w: tariff without id", store.ErrInvalid)
	}
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return mapErr(s.c.HSet(ctx, s.tariffsKey(), t.ID, b).Err())
}

// GetTariff implements store.Store.
func (s *Store) GetTariff(ctx context.Context, id string) (money.Tariff, error) {
	var t money.Tariff
	raw, err := s.c.HGet(ctx, s.tariffsKey(), id).Result()
	if errors.Is(err, redis.Nil) {
		return t, fmt.Errorf("tariff %s: %w", id, store.ErrNotFound)
	} else if err != nil {
		return t, mapErr(err)
	}
	err = store.DecodeJSON(s.tariffsKey()+" "+id, []byte(raw), &t)
	return t, err
}

// ListTariffs implements store.Store.
func (s *Store) ListTariffs(ctx context.Context) ([]money.Tariff, error) {
	h, err := s.c.HGetAll(ctx, s.tariffsKey()).Result()
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]money.Tariff, 0, len(h))
	for id, raw := range h {
		var t money.Tariff
		if err := store.DecodeJSON(s.tariffsKey()+" "+id, []byte(raw), &t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b money.Tariff) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// ---- anomalies ----

var streamID = regexp.MustCompile(`^[0-9]+-[0-9]+$`)

// AddAnomaly implements store.Store; the ID is the stream entry's.
func (s *Store) AddAnomaly(ctx context.Context, a store.Anomaly) (string, error) {
	a.ID = ""
	b, err := json.Marshal(a)
	if err != nil {
		return "", err
	}
	id, err := s.c.XAdd(ctx, &redis.XAddArgs{Stream: s.anomaliesKey(), MaxLen: s.opts.MaxAnomalies, Approx: true,
		Values: []any{"j", b}}).Result()
	return id, mapErr(err)
}

// ListAnomalies implements store.Store.
func (s *Store) ListAnomalies(ctx context.Context, limit int, cursor string) (store.AnomalyPage, error) {
	var p store.AnomalyPage
	if limit <= 0 || limit > store.MaxPage {
		return p, fmt.Errorf("%w: limit %d", store.ErrInvalid, limit)
	}
	start := "+"
	if cursor != "" {
		if !streamID.MatchString(cursor) {
			return p, fmt.Errorf("%w: bad cursor", store.ErrInvalid)
		}
		start = "(" + cursor
	}
	msgs, err := s.c.XRevRangeN(ctx, s.anomaliesKey(), start, "-", int64(limit+1)).Result()
	if err != nil {
		return p, mapErr(err)
	}
	for i, m := range msgs {
		if i == limit {
			p.NextCursor = p.Anomalies[limit-1].ID
			break
		}
		var a store.Anomaly
		raw, _ := m.Values["j"].(string)
		if err := store.DecodeJSON(s.anomaliesKey()+" "+m.ID, []byte(raw), &a); err != nil {
			return p, err
		}
		a.ID = m.ID
		p.Anomalies = append(p.Anomalies, a)
	}
	return p, nil
}

// ---- the change feed ----

func (s *Store) feedArgs(c store.Change) ([]string, []any) {
	return []string{s.feedKey(), s.feedVerKey(c.SessionID)},
		[]any{c.Version, s.opts.MaxChanges, "k", string(c.Kind), "s", c.SessionID, "v", c.Version,
			"c", c.ChargerID, "at", c.At.Format(time.RFC3339Nano), "d", c.Data}
}

func (s *Store) publish(ctx context.Context, c store.Change) error {
	keys, args := s.feedArgs(c)
	err := feedScript.Run(ctx, s.c, keys, args...).Err()
	if errors.Is(err, redis.Nil) {
		return nil // a newer version of the session was already appended
	}
	return mapErr(err)
}

// maxBlock bounds one XREAD BLOCK, so a cancelled context is noticed soon.
const maxBlock = time.Second

// ReadChanges implements store.Store with XREAD and a finite BLOCK, in a
// loop until wait has passed.
func (s *Store) ReadChanges(ctx context.Context, afterID string, max int, wait time.Duration) ([]store.Change, error) {
	if afterID == "" {
		afterID = "0-0"
	}
	if !streamID.MatchString(afterID) {
		return nil, fmt.Errorf("%w: change id %q", store.ErrInvalid, afterID)
	}
	if max <= 0 {
		return nil, fmt.Errorf("%w: max %d", store.ErrInvalid, max)
	}
	deadline := time.Now().Add(wait)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		block := time.Duration(-1) // no BLOCK
		if left := time.Until(deadline); wait > 0 && left > 0 {
			block = min(left, maxBlock)
			if block < time.Millisecond {
				block = time.Millisecond
			}
		}
		res, err := s.c.XRead(ctx, &redis.XReadArgs{Streams: []string{s.feedKey(), afterID}, Count: int64(max), Block: block}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, mapErr(err)
		}
		var out []store.Change
		for _, st := range res {
			for _, m := range st.Messages {
				c, err := s.decodeChange(m)
				if err != nil {
					return nil, err
				}
				out = append(out, c)
			}
		}
		if len(out) > 0 || block < 0 {
			return out, nil
		}
	}
}

func (s *Store) decodeChange(m redis.XMessage) (store.Change, error) {
	str := func(k string) string { v, _ := m.Values[k].(string); return v }
	c := store.Change{ID: m.ID, Kind: store.ChangeKind(str("k")), SessionID: str("s"), ChargerID: str("c"), Data: []byte(str("d"))}
	var err error
	if c.Version, err = strconv.ParseInt(str("v"), 10, 64); err != nil {
		return c, store.Corrupt(s.feedKey()+" "+m.ID, err)
	}
	if c.At, err = time.Parse(time.RFC3339Nano, str("at")); err != nil {
		return c, store.Corrupt(s.feedKey()+" "+m.ID, err)
	}
	return c, nil
}

// LatestChangeID implements store.Store.
func (s *Store) LatestChangeID(ctx context.Context) (string, error) {
	msgs, err := s.c.XRevRangeN(ctx, s.feedKey(), "+", "-", 1).Result()
	if err != nil {
		return "", mapErr(err)
	}
	if len(msgs) == 0 {
		return "", nil
	}
	return msgs[0].ID, nil
}
