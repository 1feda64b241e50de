// Package redisstore is the store.Store on Redis (go-redis/v9), for a single
// node, Sentinel or Cluster alike: the client is a redis.UniversalClient
// chosen from the URL (see New).
//
// # Key layout (P is Options.Prefix)
//
// One session's own keys share the hash tag {s:<id>}, so one Lua script can
// change them together even on Cluster:
//
//	P:{s:<id>}       hash  v = version, d = record JSON, i = the index line:
//	                       what the derived indexes hold for it (commitscripts.go)
//	P:{s:<id>}:h     list  history entries (JSON), oldest first
//	P:{s:<id>}:t     hash  the session's outbox: e:<task> effect JSON,
//	                       m:<task> "due ms\nlease-until ms\nattempts\nlease token",
//	                       x:<task> last error
//	P:{s:<id>}:w, :wq  the webhook deliveries (webhooks.go)
//	P:{s:<id>}:sync  string  Durable's write before its WAIT (durable.go)
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
// On one server (single or Sentinel) the same script also writes the global
// indexes and the feed: one round trip, nothing between them (commit.go). A
// script cannot also touch the global indexes on Cluster (other slots), so
// there they are DERIVED data, written around the script in an order that
// makes a crash between steps harmless, and every reader verifies an index
// hit against the record (two round trips; commit.go says why this order):
//
//   - Write-ahead: ahead of the script, in the same pipeline, the new tasks
//     are added to P:{due} and the new record to its list sets and P:oon. If
//     the script then fails or the process dies, the extra entries point at
//     nothing (or at a record that does not match) and are skipped or cleaned
//     up by readers. A write-ahead that failed while the script committed is
//     written again after it; what a crash leaves missing, the re-index sweep
//     puts back.
//   - After the script: the tasks it really added are indexed again where a
//     claim may have moved them, the disarmed ones and the memberships the old
//     record had and the new one lacks are removed (the old record's index
//     line names them); a list removal is followed by a re-read of the record
//     and a re-add if a later commit needs the entry again, so crossing
//     commits of two processes can leave a stale entry (skipped by readers)
//     but never lose one.
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
//   - The feed is appended after the script, in the follow-up pipeline (a
//     change must never announce a version that lost its compare-and-set). A
//     crash between the two loses that one live-board update, never session
//     data: the record and history are the truth and the next change carries
//     the full snapshot. Appends of two processes for one session cannot go
//     back in versions (feedScript). On one server the commit script appends.
//
// On a single node or Sentinel the readers' rules also hold; nothing depends
// on keyspace notifications. Scripts are loaded at start-up and run with
// Script.Run (EVALSHA, falling back to EVAL after a server restart); in a
// pipeline, where go-redis does not fall back, a NOSCRIPT answer is sent
// again with Script.Run (scriptCmds, commit.go). Stream reads use a finite
// BLOCK in a loop.
//
// # Files
//
// redis.go holds the options, the client and the key names; sessions.go
// the creation and the session reads and lists; commit.go and
// commitscripts.go the commit; outbox.go
// claims, settling and leases; idempotency.go the Idempotency-Key records
// and processed marks; registry.go chargers, tariffs and anomalies;
// feed.go the change feed; scripts.go the Lua scripts; durable.go the
// durability policy (Durable, WAIT); reindex.go the re-index sweep that finds
// outbox tasks a lost write left out of P:{due}.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chargeflow/chargeflow/fsm"
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
	// WaitTimeout bounds the WAIT of Durable (durable.go). Default
	// DefaultWaitTimeout; negative turns the durability policy off.
	WaitTimeout time.Duration
	// ReindexEvery is how often Claim takes one bounded step of the
	// re-index sweep (reindex.go). Default DefaultReindexEvery.
	ReindexEvery time.Duration
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
	if o.WaitTimeout == 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	if o.ReindexEvery <= 0 {
		o.ReindexEvery = DefaultReindexEvery
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

	replicas replicaCounts                // durable.go
	observe  atomic.Pointer[func(string)] // ObserveErrors's fn
	reindex  reindexer                    // reindex.go
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
