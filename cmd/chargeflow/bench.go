package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	paho "github.com/eclipse/paho.mqtt.golang"
	bolt "go.etcd.io/bbolt"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/charger/sim"
	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
	boltstore "github.com/chargeflow/chargeflow/store/bolt"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
)

func init() { commands["bench"] = runBench }

// benchScenarios are the scenarios in the order they run.
var benchScenarios = []struct {
	name string
	run  func(ctx context.Context, b *bench)
}{
	{"fsm", benchFSM},
	{"store", benchStore},
	{"mqtt", benchMQTT},
	{"payscore", benchPayScore},
	{"engine", benchEngine},
}

const benchUsage = `usage: chargeflow bench [--scenario fsm,store,mqtt,payscore,engine] [--duration 5s]
                       [--redis URL] [--mqtt URL] [--sessions N] [--json]

Runs load scenarios and prints each figure beside a baseline measured in the
same run, and their ratio (figure / baseline). The figure and its baseline are
each measured for --duration. Traffic goes to loopback (and to --redis /
--mqtt when given, under a unique key prefix / topic prefix that is removed
afterwards). See docs/bench.md.
`

// benchRow is one line of the report: a figure beside its baseline.
type benchRow struct {
	Scenario     string             `json:"scenario"`
	Figure       float64            `json:"figure"`
	Unit         string             `json:"unit"`
	Baseline     float64            `json:"baseline"`
	BaselineUnit string             `json:"baseline_unit"`
	Ratio        float64            `json:"ratio"`
	Ops          int64              `json:"ops"`          // operations behind Figure
	BaselineOps  int64              `json:"baseline_ops"` // operations behind Baseline
	Extra        map[string]float64 `json:"extra,omitempty"`
	Notes        string             `json:"notes,omitempty"`
	Error        string             `json:"error,omitempty"`
}

// bench is one run of the command: its options and its report. Scenarios
// run one after another on the command's goroutine; emit is not called
// concurrently.
type bench struct {
	duration time.Duration
	redisURL string
	mqttURL  string
	sessions int
	json     bool

	stdout, stderr io.Writer
	log            *slog.Logger // warnings and errors of the pieces under test, to stderr
	brokerLog      *slog.Logger // errors only: mochi warns about every connection closed at shutdown
	runID          string       // unique per run: key prefixes, topic prefixes, client ids

	rows, failed int
}

// benchMaxOps bounds every measuring loop in count, whatever the duration.
const benchMaxOps = 50_000_000

// runBench runs the selected scenarios and prints one row per figure. A
// scenario that fails prints its error in its row and the others still run;
// the command then fails, naming how many rows did.
func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	names := make([]string, len(benchScenarios))
	for i, s := range benchScenarios {
		names[i] = s.name
	}
	scenarios := fs.String("scenario", strings.Join(names, ","), "comma-separated scenarios to run: "+strings.Join(names, ", "))
	duration := fs.Duration("duration", 5*time.Second, "how long the figure, and then its baseline, are measured (per row)")
	redisURL := fs.String("redis", getenv("CHARGEFLOW_REDIS_URL"), "Redis for the store scenario's redis row (default $CHARGEFLOW_REDIS_URL; none: row skipped)")
	mqttURL := fs.String("mqtt", getenv("CHARGEFLOW_MQTT_URL"), "MQTT broker (Mosquitto) for the mqtt scenario's paho row (default $CHARGEFLOW_MQTT_URL; none: row skipped)")
	sessions := fs.Int("sessions", 8, "concurrent sessions in the engine scenario (and its baseline)")
	jsonOut := fs.Bool("json", false, "print one JSON object per row instead of a table")
	fs.Usage = func() {
		fmt.Fprint(stderr, benchUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))
	}
	if *duration <= 0 || *duration > 10*time.Minute {
		return fmt.Errorf("bench: --duration must be between 0 and 10m, got %s", *duration)
	}
	if *sessions < 1 || *sessions > 256 {
		return fmt.Errorf("bench: --sessions must be between 1 and 256, got %d", *sessions)
	}
	var selected []string
	for _, n := range strings.Split(*scenarios, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if !slices.Contains(names, n) {
			return fmt.Errorf("bench: unknown scenario %q (have %s)", n, strings.Join(names, ", "))
		}
		if !slices.Contains(selected, n) {
			selected = append(selected, n)
		}
	}
	if len(selected) == 0 {
		return errors.New("bench: no scenario selected")
	}

	var id [4]byte
	_, _ = rand.Read(id[:])
	b := &bench{duration: *duration, redisURL: *redisURL, mqttURL: *mqttURL, sessions: *sessions, json: *jsonOut,
		stdout: stdout, stderr: stderr, runID: "cfbench" + hex.EncodeToString(id[:]),
		log:       slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		brokerLog: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	if !b.json {
		fmt.Fprintf(stdout, "# chargeflow bench: %s %s/%s, GOMAXPROCS %d, duration %s per figure and per baseline, run %s\n",
			runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), b.duration, b.runID)
		b.printRow(benchRow{Scenario: "scenario"}, true)
	}
	for _, s := range benchScenarios {
		if !slices.Contains(selected, s.name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		// Every scenario stops by itself; this only bounds a hang.
		sctx, cancel := context.WithTimeout(ctx, 4*b.duration+2*time.Minute)
		s.run(sctx, b)
		cancel()
	}
	if b.failed > 0 {
		return fmt.Errorf("bench: %d of %d rows failed", b.failed, b.rows)
	}
	return ctx.Err()
}

// emit prints a finished row (the ratio is computed here).
func (b *bench) emit(r benchRow) {
	b.rows++
	if r.Error == "" && (r.Figure <= 0 || r.Baseline <= 0) {
		r.Error = fmt.Sprintf("nothing measured (figure %g, baseline %g)", r.Figure, r.Baseline)
	}
	if r.Error != "" {
		b.failed++
		r.Figure, r.Baseline = 0, 0
	} else {
		r.Ratio = r.Figure / r.Baseline
	}
	if b.json {
		line, err := json.Marshal(r)
		if err != nil {
			line = []byte(fmt.Sprintf(`{"scenario":%q,"error":%q}`, r.Scenario, err.Error()))
		}
		fmt.Fprintf(b.stdout, "%s\n", line)
		return
	}
	b.printRow(r, false)
}

// fail emits a row that carries only an error.
func (b *bench) fail(scenario string, err error) {
	b.emit(benchRow{Scenario: scenario, Error: err.Error()})
}

// skip says on stderr why a row is not measured (it is not a failure).
func (b *bench) skip(scenario, why string) {
	fmt.Fprintf(b.stderr, "chargeflow bench: %s skipped: %s\n", scenario, why)
}

// Table columns are separated by at least two spaces (units contain single
// spaces), so the table can be read back by splitting on runs of 2+ spaces.
func (b *bench) printRow(r benchRow, header bool) {
	cell := func(s string, w int) string {
		n := utf8.RuneCountInString(s)
		if n+2 > w {
			return s + "  "
		}
		return s + strings.Repeat(" ", w-n)
	}
	if header {
		fmt.Fprintf(b.stdout, "%s%s%s%s%s\n", cell("scenario", 22), cell("figure", 34), cell("baseline", 48), cell("ratio", 8), "notes")
		return
	}
	if r.Error != "" {
		fmt.Fprintf(b.stdout, "%serror: %s\n", cell(r.Scenario, 22), r.Error)
		return
	}
	fmt.Fprintf(b.stdout, "%s%s%s%s%s\n", cell(r.Scenario, 22), cell(human(r.Figure)+" "+r.Unit, 34),
		cell(human(r.Baseline)+" "+r.BaselineUnit, 48), cell(strconv.FormatFloat(r.Ratio, 'f', 2, 64), 8), r.Notes)
}

// human formats a rate with three significant digits: 2.10M, 117k, 2100, 40.3.
func human(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case v >= 1e5:
		return strconv.FormatFloat(v/1e3, 'f', 0, 64) + "k"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// ---- timed loops ----

// loop accumulates one measured operation over several rounds.
type loop struct {
	ops     int64
	elapsed time.Duration
	mallocs uint64
}

func (l *loop) rate() float64 {
	if l.elapsed <= 0 {
		return 0
	}
	return float64(l.ops) / l.elapsed.Seconds()
}

func (l *loop) allocsPerOp() float64 {
	if l.ops == 0 {
		return 0
	}
	return float64(l.mallocs) / float64(l.ops)
}

// run calls op back to back on this goroutine for d (at least once, at most
// benchMaxOps times in all). Mallocs are counted process-wide, so the
// allocation figures are exact only while nothing else runs.
func (l *loop) run(ctx context.Context, d time.Duration, op func() error) error {
	check := int64(1)
	if l.ops > 0 && l.elapsed/time.Duration(l.ops) < 20*time.Microsecond {
		check = 32 // reading the clock would be a noticeable part of a quick op
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m0 := ms.Mallocs
	start := time.Now()
	var n int64
	var err error
	for {
		if err = op(); err != nil {
			break
		}
		n++
		if n%check == 0 && (time.Since(start) >= d || ctx.Err() != nil || l.ops+n >= benchMaxOps) {
			break
		}
	}
	l.elapsed += time.Since(start)
	runtime.ReadMemStats(&ms)
	l.mallocs += ms.Mallocs - m0
	l.ops += n
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// alternate measures fig and base in four alternating rounds, each side for
// d in all, so that a slow moment of the machine hits both alike.
func alternate(ctx context.Context, d time.Duration, fig, base func() error) (f, b loop, err error) {
	const rounds = 4
	per := d / rounds
	for range rounds {
		if err := f.run(ctx, per, fig); err != nil {
			return f, b, err
		}
		if err := b.run(ctx, per, base); err != nil {
			return f, b, fmt.Errorf("baseline: %w", err)
		}
	}
	return f, b, nil
}

// ---- fsm ----

// benchSession returns a session in `charging` that started at 09:59:30
// Beijing time, and a meter sample 90 s later: the sample spans the 10:00
// boundary of the default tariff, so applying it splits energy over two
// periods.
func benchSession(m *fsm.Machine, id, chargerID string) (fsm.Session, fsm.Event, error) {
	t0 := time.Date(2026, 11, 26, 1, 59, 0, 0, time.UTC) // 09:59 Beijing
	r, err := m.NewSession(fsm.Event{Type: fsm.EvCreate, At: t0, By: fsm.ByApp, Create: &fsm.CreateParams{
		ID: id, ChargerID: chargerID, Connector: 1, OpenID: "bench-openid", MaxAmountFen: 50_000,
		Tariff: money.DefaultTariff(), OutOrderNo: "BENCH" + id, CreateReqDate: "20261126"}})
	if err != nil {
		return fsm.Session{}, fsm.Event{}, fmt.Errorf("create: %w", err)
	}
	s := r.Session
	at := t0.Add(20 * time.Second)
	for _, e := range []fsm.Event{
		{Type: fsm.EvConfirm, At: at, By: fsm.ByPayScore},
		{Type: fsm.EvStarted, At: at.Add(10 * time.Second), By: fsm.ByCharger, ChargerTime: at.Add(10 * time.Second), MeterWh: 1000},
	} {
		if r, err = m.Apply(s, e); err != nil {
			return fsm.Session{}, fsm.Event{}, fmt.Errorf("%s: %w", e.Type, err)
		}
		s = r.Session
	}
	sampleAt := at.Add(100 * time.Second)
	meter := fsm.Event{Type: fsm.EvMeter, At: sampleAt, By: fsm.ByCharger, ChargerTime: sampleAt, MeterWh: 1500, Seq: 1}
	return s, meter, nil
}

// benchFSM: Machine.Apply of a meter sample (clone, tariff split, cap check)
// beside a JSON decode+encode of the same session record, which is what the
// engine pays around every Apply to load and store the session.
func benchFSM(ctx context.Context, b *bench) {
	const name = "fsm.apply"
	m, err := fsm.New(fsm.DefaultConfig())
	if err != nil {
		b.fail(name, err)
		return
	}
	s, meter, err := benchSession(m, "fsmbench", "CP1")
	if err != nil {
		b.fail(name, err)
		return
	}
	if r, err := m.Apply(s, meter); err != nil || !r.Changed {
		b.fail(name, fmt.Errorf("meter sample not applied: %v", err))
		return
	}
	raw, err := json.Marshal(s)
	if err != nil {
		b.fail(name, err)
		return
	}
	var sink int
	f, base, err := alternate(ctx, b.duration,
		func() error {
			r, err := m.Apply(s, meter)
			sink += len(r.History)
			return err
		},
		func() error {
			var d fsm.Session
			if err := json.Unmarshal(raw, &d); err != nil {
				return err
			}
			out, err := json.Marshal(d)
			sink += len(out)
			return err
		})
	_ = sink
	if err != nil {
		b.fail(name, err)
		return
	}
	b.emit(benchRow{Scenario: name, Figure: f.rate(), Unit: "Apply/s (meter sample)", Ops: f.ops,
		Baseline: base.rate(), BaselineUnit: "session JSON decode+encode/s", BaselineOps: base.ops,
		Extra: map[string]float64{"allocs_per_op": f.allocsPerOp(), "baseline_allocs_per_op": base.allocsPerOp(), "record_bytes": float64(len(raw))},
		Notes: fmt.Sprintf("%.0f allocs/op; baseline %.0f allocs/op on a %d-byte record", f.allocsPerOp(), base.allocsPerOp(), len(raw))})
}

// ---- store ----

// commitLoop commits transitions one after another to one session, each
// with a history entry, an effect and a feed entry (what a real transition
// writes), as store/storetest.BenchCommit does.
type commitLoop struct {
	st   store.Store
	sess fsm.Session
	i    int
}

func newCommitLoop(ctx context.Context, st store.Store, id string) (*commitLoop, error) {
	m, err := fsm.New(fsm.DefaultConfig())
	if err != nil {
		return nil, err
	}
	s, _, err := benchSession(m, id, "BENCHCP")
	if err != nil {
		return nil, err
	}
	if err := st.CreateSession(ctx, store.Commit{Session: s}); err != nil {
		return nil, fmt.Errorf("create session: %w", err)
	}
	s.Version = 1
	return &commitLoop{st: st, sess: s}, nil
}

func (c *commitLoop) commit(ctx context.Context) error {
	c.i++
	n := c.sess.Clone()
	n.Seq = int64(c.i)
	n.UpdatedAt = c.sess.UpdatedAt.Add(time.Millisecond)
	err := c.st.Commit(ctx, store.Commit{ExpectedVersion: c.sess.Version, Session: n,
		History: []fsm.HistoryEntry{{At: n.UpdatedAt, From: n.State, To: n.State, Event: fsm.EvMeter, By: fsm.ByCharger}},
		Effects: []fsm.Effect{{ID: fmt.Sprintf("bench/%d", c.i), Kind: fsm.EffQueryOrder, Session: n.ID, DueAt: n.UpdatedAt.Add(time.Hour)}},
		Publish: true, ChangeData: []byte(`{"id":"bench"}`)})
	if err != nil {
		return fmt.Errorf("commit %d: %w", c.i, err)
	}
	n.Version = c.sess.Version + 1
	c.sess = n
	return nil
}

// benchStore: transition commits beside the raw operation of the same
// backend: a bbolt Update that puts the same record bytes (fsync included
// on both sides), and a Redis PING on the same client.
func benchStore(ctx context.Context, b *bench) {
	b.emitStoreBolt(ctx)
	if b.redisURL == "" {
		b.skip("store.redis.commit", "no --redis (or CHARGEFLOW_REDIS_URL)")
		return
	}
	b.emitStoreRedis(ctx)
}

func (b *bench) emitStoreBolt(ctx context.Context) {
	const name = "store.bolt.commit"
	dir, err := os.MkdirTemp("", "chargeflow-bench-")
	if err != nil {
		b.fail(name, err)
		return
	}
	defer os.RemoveAll(dir)
	st, err := boltstore.Open(filepath.Join(dir, "store"), boltstore.Options{Logger: b.log})
	if err != nil {
		b.fail(name, err)
		return
	}
	defer st.Close()
	cl, err := newCommitLoop(ctx, st, "boltbench")
	if err != nil {
		b.fail(name, err)
		return
	}
	record, err := store.MarshalSession(cl.sess)
	if err != nil {
		b.fail(name, err)
		return
	}
	// The raw side: bbolt opened as boltstore opens it, one bucket, one key.
	if err := os.MkdirAll(filepath.Join(dir, "raw"), 0o700); err != nil {
		b.fail(name, err)
		return
	}
	db, err := bolt.Open(filepath.Join(dir, "raw", "raw.db"), 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		b.fail(name, err)
		return
	}
	defer db.Close()
	bucket, key := []byte("sessions"), []byte("boltbench")
	f, base, err := alternate(ctx, b.duration,
		func() error { return cl.commit(ctx) },
		func() error {
			return db.Update(func(tx *bolt.Tx) error {
				bk, err := tx.CreateBucketIfNotExists(bucket)
				if err != nil {
					return err
				}
				return bk.Put(key, record)
			})
		})
	if err != nil {
		b.fail(name, err)
		return
	}
	b.emit(benchRow{Scenario: name, Figure: f.rate(), Unit: "commits/s", Ops: f.ops,
		Baseline: base.rate(), BaselineUnit: "raw bbolt Update/s (put same bytes)", BaselineOps: base.ops,
		Notes: fmt.Sprintf("one session; record %d bytes + history + effect + feed entry; both fsync", len(record))})
}

func (b *bench) emitStoreRedis(ctx context.Context) {
	const name = "store.redis.commit"
	prefix := b.runID
	st, err := redisstore.New(ctx, b.redisURL, redisstore.Options{Prefix: prefix, Logger: b.log})
	if err != nil {
		b.fail(name, err)
		return
	}
	defer st.Close()
	defer func() {
		if err := deleteRedisPrefix(context.WithoutCancel(ctx), st, prefix); err != nil {
			fmt.Fprintf(b.stderr, "chargeflow bench: could not remove Redis keys %s:*: %v\n", prefix, err)
		}
	}()
	cl, err := newCommitLoop(ctx, st, "redisbench")
	if err != nil {
		b.fail(name, err)
		return
	}
	f, base, err := alternate(ctx, b.duration,
		func() error { return cl.commit(ctx) },
		func() error { return st.Client().Ping(ctx).Err() })
	if err != nil {
		b.fail(name, err)
		return
	}
	b.emit(benchRow{Scenario: name, Figure: f.rate(), Unit: "commits/s", Ops: f.ops,
		Baseline: base.rate(), BaselineUnit: "PING/s (same client)", BaselineOps: base.ops,
		Extra: map[string]float64{"pings_per_commit": base.rate() / f.rate()},
		Notes: fmt.Sprintf("one commit costs the time of %.1f PINGs; keys under %s: removed after", base.rate()/f.rate(), prefix)})
}

// deleteRedisPrefix removes the keys this run created, and only those: every
// key of the store starts with "<prefix>:". Never FLUSH a shared Redis.
func deleteRedisPrefix(ctx context.Context, st *redisstore.Store, prefix string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c := st.Client()
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, prefix+":*", 500).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := c.Unlink(ctx, keys...).Err(); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// ---- mqtt ----

// benchCreds is an in-memory charger registry for the embedded broker.
type benchCreds map[string]string // charger id → hash

func (c benchCreds) ChargerPasswordHash(_ context.Context, id string) (string, bool, error) {
	h, ok := c[id]
	return h, ok, nil
}

// mqttRig drives charger-shaped traffic (meter samples, QoS 1) from a few
// publishers and counts what arrives, at the link's Handler or at a raw
// subscriber, whichever is being measured.
type mqttRig struct {
	url, user, pass string
	batch           int // messages per publisher between two checks of the clock
	topics          charger.Topics
	payload         []byte
	pubs            []paho.Client
	pubIDs          []string

	countLink, countRaw atomic.Bool
	got                 atomic.Int64
}

// mqttPublishers publish at once. A batch of all publishers must stay below
// the broker's per-client queue: Mosquitto's default max_queued_messages is
// 1000 (plus 20 in flight), and a QoS 1 message beyond it is dropped, so on
// an external broker a batch is 4×100 messages; the embedded one takes 4×250.
const mqttPublishers = 4

func (r *mqttRig) handler(context.Context, charger.Inbound) error {
	if r.countLink.Load() {
		r.got.Add(1)
	}
	return nil
}

func (r *mqttRig) rawMessage(paho.Client, paho.Message) {
	if r.countRaw.Load() {
		r.got.Add(1)
	}
}

func benchPaho(url, id, user, pass string) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pass).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("connect %s to %s: %v", id, url, t.Error())
	}
	return c, nil
}

// connect starts one publisher per charger id, with client ids clientIDs
// and the credentials creds(i) gives.
func (r *mqttRig) connect(chargerIDs, clientIDs []string, creds func(i int) (user, pass string)) error {
	m, err := charger.Encode(charger.MeterMsg{SessionID: "benchsession", Connector: 1, Seq: 1, TS: time.Now(), EnergyWh: 1234, PowerW: 7040})
	if err != nil {
		return err
	}
	r.payload = m
	for i, id := range clientIDs {
		u, p := creds(i)
		c, err := benchPaho(r.url, id, u, p)
		if err != nil {
			return err
		}
		r.pubs = append(r.pubs, c)
		r.pubIDs = append(r.pubIDs, chargerIDs[i])
	}
	return nil
}

func (r *mqttRig) close() {
	for _, c := range r.pubs {
		c.Disconnect(100)
	}
}

// pump publishes batches from every publisher, waiting after each batch
// until all of it arrived, until d has passed. It returns messages and time.
func (r *mqttRig) pump(ctx context.Context, d time.Duration, counter *atomic.Bool) (int64, time.Duration, error) {
	r.got.Store(0)
	counter.Store(true)
	defer counter.Store(false)
	start := time.Now()
	var sent int64
	for time.Since(start) < d && sent < benchMaxOps {
		errs := make(chan error, len(r.pubs))
		var wg sync.WaitGroup
		for i, c := range r.pubs {
			topic := r.topics.Up(r.pubIDs[i], charger.KindMeter)
			wg.Go(func() {
				var last paho.Token
				for range r.batch {
					last = c.Publish(topic, 1, false, r.payload)
				}
				if !last.WaitTimeout(30 * time.Second) {
					errs <- fmt.Errorf("publish: no PUBACK within 30s")
				} else if err := last.Error(); err != nil {
					errs <- fmt.Errorf("publish: %w", err)
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return 0, 0, err
		}
		sent += int64(r.batch * len(r.pubs))
		last, progress := r.got.Load(), time.Now()
		for got := last; got < sent; got = r.got.Load() {
			if got != last {
				last, progress = got, time.Now()
			} else if time.Since(progress) > 5*time.Second {
				return 0, 0, fmt.Errorf("received %d of %d messages, none for 5s (dropped by the broker?)", got, sent)
			}
			if err := ctx.Err(); err != nil {
				return 0, 0, err
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	return sent, time.Since(start), nil
}

// benchMQTT: meter samples from 4 chargers through chargeflow's link to its
// Handler, beside the same broker's raw publish→subscribe to a plain paho
// subscriber (QoS 1 both ways).
func benchMQTT(ctx context.Context, b *bench) {
	b.emitMQTTEmbedded(ctx)
	if b.mqttURL == "" {
		b.skip("mqtt.mosquitto", "no --mqtt (or CHARGEFLOW_MQTT_URL)")
		return
	}
	b.emitMQTTPaho(ctx)
}

func (b *bench) emitMQTTEmbedded(ctx context.Context) {
	const name = "mqtt.embedded"
	creds := benchCreds{}
	ids := make([]string, mqttPublishers)
	for i := range ids {
		ids[i] = fmt.Sprintf("BENCH-%d", i)
		h, err := charger.HashPassword("pw-" + ids[i])
		if err != nil {
			b.fail(name, err)
			return
		}
		creds[ids[i]] = h
	}
	servicePass := b.runID + "-service"
	r := &mqttRig{batch: 250, topics: charger.Topics{Prefix: charger.DefaultPrefix}}
	broker, err := charger.NewEmbeddedBroker(charger.EmbeddedConfig{ListenAddr: "127.0.0.1:0", Credentials: creds,
		ServiceUsername: "chargeflow-bench", ServicePassword: servicePass, Logger: b.brokerLog})
	if err != nil {
		b.fail(name, err)
		return
	}
	// The broker is the link: it runs the Handler for every charger publish,
	// so it is started first; the Handler only counts while it is measured.
	if err := broker.Start(ctx, r.handler); err != nil {
		b.fail(name, err)
		return
	}
	defer broker.Close()
	r.url = broker.URL()
	if err := r.connect(ids, ids, func(i int) (string, string) { return ids[i], "pw-" + ids[i] }); err != nil {
		r.close()
		b.fail(name, err)
		return
	}
	defer r.close()

	raw, err := benchPaho(r.url, b.runID+"-raw", "chargeflow-bench", servicePass)
	if err != nil {
		b.fail(name, err)
		return
	}
	if t := raw.Subscribe(r.topics.UpFilter(), 1, r.rawMessage); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		raw.Disconnect(100)
		b.fail(name, fmt.Errorf("raw subscribe: %v", t.Error()))
		return
	}
	rawN, rawT, err := r.pump(ctx, b.duration, &r.countRaw)
	raw.Disconnect(100)
	if err != nil {
		b.fail(name, fmt.Errorf("baseline: %w", err))
		return
	}
	linkN, linkT, err := r.pump(ctx, b.duration, &r.countLink)
	if err != nil {
		b.fail(name, err)
		return
	}
	b.emit(benchRow{Scenario: name, Figure: float64(linkN) / linkT.Seconds(), Unit: "msgs/s to Handler", Ops: linkN,
		Baseline: float64(rawN) / rawT.Seconds(), BaselineUnit: "raw pub→sub msgs/s (same broker)", BaselineOps: rawN,
		Notes: fmt.Sprintf("%d publishers, QoS 1, %d-byte meter samples", mqttPublishers, len(r.payload))})
}

func (b *bench) emitMQTTPaho(ctx context.Context) {
	const name = "mqtt.mosquitto"
	u, err := url.Parse(b.mqttURL)
	if err != nil || u.Host == "" {
		b.fail(name, fmt.Errorf("--mqtt: not a broker URL: %q", b.mqttURL))
		return
	}
	var user, pass string
	if u.User != nil {
		user = u.User.Username()
		pass, _ = u.User.Password()
		u.User = nil
	}
	brokerURL := u.String()
	// Everything this run does on the shared broker lives under its own
	// prefix and client ids.
	prefix := b.runID + "/ev/v1"
	r := &mqttRig{url: brokerURL, user: user, pass: pass, batch: 100, topics: charger.Topics{Prefix: prefix}}
	ids := make([]string, mqttPublishers)
	for i := range ids {
		ids[i] = fmt.Sprintf("BENCH-%d", i)
	}
	clientIDs := make([]string, len(ids))
	for i := range ids {
		clientIDs[i] = b.runID + "-" + ids[i]
	}
	if err := r.connect(ids, clientIDs, func(int) (string, string) { return user, pass }); err != nil {
		r.close()
		b.fail(name, err)
		return
	}
	defer r.close()

	raw, err := benchPaho(brokerURL, b.runID+"-raw", user, pass)
	if err != nil {
		b.fail(name, err)
		return
	}
	if t := raw.Subscribe(r.topics.UpFilter(), 1, r.rawMessage); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		raw.Disconnect(100)
		b.fail(name, fmt.Errorf("raw subscribe: %v", t.Error()))
		return
	}
	rawN, rawT, err := r.pump(ctx, b.duration, &r.countRaw)
	raw.Disconnect(100)
	if err != nil {
		b.fail(name, fmt.Errorf("baseline: %w", err))
		return
	}

	linkID := b.runID + "-link"
	link, err := charger.NewPahoLink(charger.PahoConfig{URL: brokerURL, Username: user, Password: pass, ClientID: linkID,
		Prefix: prefix, Logger: b.log})
	if err != nil {
		b.fail(name, err)
		return
	}
	// The link keeps a persistent session (clean session false): remove it
	// from the broker afterwards by connecting once more with a clean one.
	defer func() {
		if c, err := benchPaho(brokerURL, linkID, user, pass); err == nil {
			c.Disconnect(100)
		} else {
			fmt.Fprintf(b.stderr, "chargeflow bench: could not remove the persistent session %s: %v\n", linkID, err)
		}
	}()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err = link.Start(sctx, r.handler)
	cancel()
	if err != nil {
		_ = link.Close()
		b.fail(name, err)
		return
	}
	linkN, linkT, err := r.pump(ctx, b.duration, &r.countLink)
	_ = link.Close()
	if err != nil {
		b.fail(name, err)
		return
	}
	b.emit(benchRow{Scenario: name, Figure: float64(linkN) / linkT.Seconds(), Unit: "msgs/s to Handler", Ops: linkN,
		Baseline: float64(rawN) / rawT.Seconds(), BaselineUnit: "raw paho pub→sub msgs/s (same broker)", BaselineOps: rawN,
		Notes: fmt.Sprintf("%d publishers, QoS 1, manual ack after Handler; topics under %s/", mqttPublishers, b.runID)})
}

// ---- payscore ----

// replayTransport answers every request with the same signed reply, in
// memory: the payscore scenario measures the client, not a network.
type replayTransport struct{ reply []byte }

func (t replayTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json;charset=UTF-8"}}, ContentLength: int64(len(t.reply)),
		Body: io.NopCloser(bytes.NewReader(t.reply)), Request: r}, nil
}

// benchPayScore: payscore.Client.Call (canonical JSON, RSA-2048 signature,
// envelope, reply parsing, RSA verification of the reply) against an
// in-memory transport, beside the bare RSA-2048 PKCS#1 v1.5 SHA-256 sign of
// the same request bytes and verify of the same reply bytes.
func benchPayScore(ctx context.Context, b *bench) {
	const name = "payscore.sign+verify"
	merchant, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.fail(name, err)
		return
	}
	huifu, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.fail(name, err)
		return
	}
	data := map[string]string{
		"huifu_id": "6666000100000001", "notify_url": "https://cf.example/notify/huifu/payscore", "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
		"req_date": "20261126", "req_seq_id": "CR0001bench0000000000000000000000", "risk_fund": `{"name":"ESTIMATE_ORDER_COST","amount":5000}`,
		"service_introduction": "电动汽车充电", "time_range": `{"start_time":"OnAccept"}`, "service_id": "sandbox-service",
	}
	request, err := payscore.CanonicalJSON(data)
	if err != nil {
		b.fail(name, err)
		return
	}
	replyData, err := payscore.CanonicalJSON(map[string]string{"resp_code": "00000000", "resp_desc": "成功",
		"huifu_id": data["huifu_id"], "req_seq_id": data["req_seq_id"], "req_date": data["req_date"],
		"out_order_no": "BENCHORDER00000001", "service_id": "sandbox-service", "state": "CREATED",
		"package": "DJIOSQPYWDxsdfsdfsdf123aBDOEKoj"})
	if err != nil {
		b.fail(name, err)
		return
	}
	huifuSigner := payscore.NewRSASigner(huifu)
	replySig, err := huifuSigner.Sign(replyData)
	if err != nil {
		b.fail(name, err)
		return
	}
	reply, err := json.Marshal(map[string]any{"data": json.RawMessage(replyData), "sign": replySig})
	if err != nil {
		b.fail(name, err)
		return
	}
	client, err := payscore.New(payscore.Config{BaseURL: "http://huifu.invalid", SysID: "6666000100000000", ProductID: "PAYUN",
		HuifuID: data["huifu_id"], Signer: payscore.NewRSASigner(merchant), Verifier: payscore.NewRSAVerifier(&huifu.PublicKey),
		HTTPClient: &http.Client{Transport: replayTransport{reply: reply}}, MaxAttempts: 1})
	if err != nil {
		b.fail(name, err)
		return
	}
	rawSig, err := base64.StdEncoding.DecodeString(replySig)
	if err != nil {
		b.fail(name, err)
		return
	}
	f, base, err := alternate(ctx, b.duration,
		func() error { return client.Call(ctx, payscore.PathCreateOrder, data, nil) },
		func() error {
			sum := sha256.Sum256(request)
			if _, err := rsa.SignPKCS1v15(rand.Reader, merchant, crypto.SHA256, sum[:]); err != nil {
				return err
			}
			sum = sha256.Sum256(replyData)
			return rsa.VerifyPKCS1v15(&huifu.PublicKey, crypto.SHA256, sum[:], rawSig)
		})
	if err != nil {
		b.fail(name, err)
		return
	}
	b.emit(benchRow{Scenario: name, Figure: f.rate(), Unit: "Call/s (in-memory reply)", Ops: f.ops,
		Baseline: base.rate(), BaselineUnit: "raw RSA-2048 sign+verify/s", BaselineOps: base.ops,
		Notes: fmt.Sprintf("one goroutine; request %d bytes, reply data %d bytes", len(request), len(replyData))})
}

// ---- engine ----

// benchObserver keeps the engine's own confirm→start-sent durations.
type benchObserver struct {
	mu             sync.Mutex
	confirmToStart []time.Duration
}

func (o *benchObserver) Transition(fsm.State, fsm.State, fsm.EventType) {}
func (o *benchObserver) Effect(fsm.EffectKind, string)                  {}
func (o *benchObserver) Anomaly()                                       {}
func (o *benchObserver) ConfirmToStart(d time.Duration) {
	o.mu.Lock()
	o.confirmToStart = append(o.confirmToStart, d)
	o.mu.Unlock()
}

// feedWatch follows the store's change feed (what the SSE stream reads) and
// remembers when each session first reached each state, so that waiting for
// a state costs no polling of the store.
type feedWatch struct {
	mu      sync.Mutex
	reached map[string]map[fsm.State]time.Time
	wake    chan struct{} // closed and replaced after every batch
}

func newFeedWatch() *feedWatch {
	return &feedWatch{reached: map[string]map[fsm.State]time.Time{}, wake: make(chan struct{})}
}

func (w *feedWatch) run(ctx context.Context, st store.Store, after string) {
	for ctx.Err() == nil {
		changes, err := st.ReadChanges(ctx, after, 512, 100*time.Millisecond)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if len(changes) == 0 {
			continue
		}
		w.mu.Lock()
		for _, c := range changes {
			after = c.ID
			if c.Kind != store.ChangeSession {
				continue
			}
			var v struct {
				State fsm.State `json:"state"`
			}
			if json.Unmarshal(c.Data, &v) != nil || v.State == "" {
				continue
			}
			at := c.At
			if at.IsZero() {
				at = time.Now()
			}
			m := w.reached[c.SessionID]
			if m == nil {
				m = map[fsm.State]time.Time{}
				w.reached[c.SessionID] = m
			}
			if _, seen := m[v.State]; !seen {
				m[v.State] = at
			}
		}
		close(w.wake)
		w.wake = make(chan struct{})
		w.mu.Unlock()
	}
}

// wait returns the first of states that session id reached, and when.
func (w *feedWatch) wait(ctx context.Context, id string, states ...fsm.State) (fsm.State, time.Time, error) {
	for {
		w.mu.Lock()
		for _, s := range states {
			if at, ok := w.reached[id][s]; ok {
				w.mu.Unlock()
				return s, at, nil
			}
		}
		wake := w.wake
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			w.mu.Lock()
			var seen []string
			for s := range w.reached[id] {
				seen = append(seen, string(s))
			}
			w.mu.Unlock()
			slices.Sort(seen)
			return "", time.Time{}, fmt.Errorf("session %s: no %v (seen %v): %w", id, states, seen, ctx.Err())
		case <-wake:
		}
	}
}

func (w *feedWatch) forget(id string) {
	w.mu.Lock()
	delete(w.reached, id)
	w.mu.Unlock()
}

// benchServer serves h on a loopback port until the returned stop is called.
func benchServer(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close(); <-done }, nil
}

// engineRig is the real engine with the bolt store, the embedded broker,
// simulated chargers and the Pay Score sandbox over loopback HTTP.
type engineRig struct {
	b       *bench
	st      store.Store
	sb      *sandbox.Sandbox
	sbURL   string
	eng     *session.Engine
	fleet   *sim.Fleet
	watch   *feedWatch
	obs     *benchObserver
	tr      *http.Transport // every HTTP client of the rig, closed at the end
	closers []func()
}

func (r *engineRig) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

func (r *engineRig) onClose(f func()) { r.closers = append(r.closers, f) }

const benchSimPassword = "bench-charger-password"

func newEngineRig(ctx context.Context, b *bench) (_ *engineRig, err error) {
	r := &engineRig{b: b, watch: newFeedWatch(), obs: &benchObserver{}}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	r.tr = &http.Transport{MaxIdleConnsPerHost: 4 * b.sessions, IdleConnTimeout: 30 * time.Second}
	r.onClose(r.tr.CloseIdleConnections)

	dir, err := os.MkdirTemp("", "chargeflow-bench-")
	if err != nil {
		return nil, err
	}
	r.onClose(func() { os.RemoveAll(dir) })
	st, err := boltstore.Open(dir, boltstore.Options{Logger: b.log})
	if err != nil {
		return nil, err
	}
	r.st = st
	r.onClose(func() { st.Close() })
	if err := st.PutTariff(ctx, money.DefaultTariff()); err != nil {
		return nil, err
	}

	sb, err := sandbox.New(sandbox.Options{NotifyBackoff: 200 * time.Millisecond, NotifyTimeout: 5 * time.Second,
		NotifyClient: &http.Client{Transport: r.tr}, Logger: b.log})
	if err != nil {
		return nil, err
	}
	r.sb = sb
	r.onClose(func() { sb.Close() })
	sbURL, stopSB, err := benchServer(sb.Handler())
	if err != nil {
		return nil, err
	}
	r.sbURL = sbURL
	r.onClose(stopSB)
	r.onClose(func() { sb.Close() }) // before its server: abandon notifications in flight

	payCfg, err := sb.ClientConfig(sbURL)
	if err != nil {
		return nil, err
	}
	// The notify endpoint is the engine's, as api serves it; the engine is
	// created below, and notifications only come after its first session.
	var eng atomic.Pointer[session.Engine]
	notifyURL, stopNotify, err := benchServer(payscore.NotifyHandler(payCfg.Verifier, func(ctx context.Context, n payscore.Notification) error {
		e := eng.Load()
		if e == nil {
			return errors.New("engine not running")
		}
		return e.HandleNotification(ctx, n)
	}, payscore.NotifyOptions{Logger: b.log}))
	if err != nil {
		return nil, err
	}
	r.onClose(stopNotify)
	payCfg.NotifyURL = notifyURL + "/notify/huifu/payscore"
	payCfg.HTTPClient = &http.Client{Transport: r.tr}
	payCfg.Logger = b.log
	pay, err := payscore.New(payCfg)
	if err != nil {
		return nil, err
	}

	broker, err := charger.NewEmbeddedBroker(charger.EmbeddedConfig{ListenAddr: "127.0.0.1:0",
		Credentials: session.Credentials(st), Logger: b.brokerLog})
	if err != nil {
		return nil, err
	}
	mcfg := fsm.DefaultConfig()
	mcfg.PollInterval = 2 * time.Second // a lost notification costs the run 2 s, not 30
	e, err := session.New(session.Config{Machine: mcfg, InstanceID: b.runID}, st, pay, broker, b.log, r.obs, nil)
	if err != nil {
		return nil, err
	}
	r.eng = e
	eng.Store(e)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if err := broker.Start(runCtx, e.HandleCharger); err != nil {
		cancel()
		return nil, err
	}
	var wg sync.WaitGroup
	r.onClose(func() { cancel(); wg.Wait() }) // workers and the feed watcher, after the broker
	r.onClose(func() { broker.Close() })
	after, err := st.LatestChangeID(ctx)
	if err != nil {
		return nil, err
	}
	wg.Go(func() { r.watch.run(runCtx, st, after) })
	wg.Go(func() { _ = e.Run(runCtx) })

	specs := make([]sim.ChargerSpec, b.sessions)
	for i := range specs {
		id := fmt.Sprintf("BENCH-%03d", i+1)
		if _, err := e.PutCharger(ctx, id, session.ChargerRequest{Connectors: []int{1}, TariffID: "default", Password: benchSimPassword}); err != nil {
			return nil, fmt.Errorf("register %s: %w", id, err)
		}
		specs[i] = sim.ChargerSpec{ID: id, Password: benchSimPassword, Connectors: []int{1}}
	}
	// A sample every 100 ms at 720 kW: 20 Wh, enough to cost a few fen in
	// every tariff period, so a session can stop after its first sample.
	fleet, err := sim.New(sim.Config{BrokerURL: broker.URL(), Chargers: specs, MeterInterval: 100 * time.Millisecond,
		PowerW: 720_000, TxnResend: 500 * time.Millisecond, Logger: b.log})
	if err != nil {
		return nil, err
	}
	r.fleet = fleet
	if err := fleet.Start(ctx); err != nil {
		fleet.Close()
		return nil, fmt.Errorf("simulated chargers: %w", err)
	}
	r.onClose(func() { fleet.Close() }) // before the broker stops
	deadline := time.Now().Add(20 * time.Second)
	for _, sp := range specs {
		for {
			c, err := st.GetCharger(ctx, sp.ID)
			if err == nil && c.Online {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("charger %s not online after 20s", sp.ID)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return r, nil
}

// sessionTimes are the durations of one benchmarked session.
type sessionTimes struct {
	confirmToCharging time.Duration // the user confirms → the charger's started is stored
	stopToPaid        time.Duration // the user stops → paid is stored
	total             time.Duration // create called → paid stored
}

// session runs one session on connector 1 of c: plug, create, the user
// confirms at once, wait for charging, charge until the first meter sample,
// stop, wait until paid, unplug.
func (r *engineRig) session(ctx context.Context, c *sim.Charger, user string) (sessionTimes, error) {
	var t sessionTimes
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := c.Plug(1); err != nil {
		return t, err
	}
	defer c.Unplug(1)
	begin := time.Now()
	id := session.NewID(begin)
	defer r.watch.forget(id)
	s, err := r.eng.Create(ctx, id, session.CreateRequest{ChargerID: c.ID(), Connector: 1, OpenID: user, MaxAmountFen: 5000})
	if err != nil {
		return t, fmt.Errorf("create: %w", err)
	}
	confirmed := time.Now()
	if err := r.sb.Confirm(s.OutOrderNo); err != nil {
		return t, fmt.Errorf("confirm: %w", err)
	}
	state, startedAt, err := r.watch.wait(ctx, id, fsm.Charging, fsm.Cancelled)
	if err != nil {
		return t, err
	}
	if state != fsm.Charging {
		return t, fmt.Errorf("session %s %s before charging", id, state)
	}
	for {
		si, ok := c.Session(1)
		if !ok || c.Register(1) > si.StartWh {
			break
		}
		select {
		case <-ctx.Done():
			return t, fmt.Errorf("session %s: no energy: %w", id, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	stopped := time.Now()
	if _, err := r.eng.Stop(ctx, id, fsm.ByApp); err != nil {
		return t, fmt.Errorf("stop: %w", err)
	}
	state, paidAt, err := r.watch.wait(ctx, id, fsm.Paid, fsm.Cancelled, fsm.Refunded)
	if err != nil {
		return t, err
	}
	if state != fsm.Paid {
		return t, fmt.Errorf("session %s ended %s, not paid", id, state)
	}
	return sessionTimes{confirmToCharging: startedAt.Sub(confirmed), stopToPaid: paidAt.Sub(stopped), total: paidAt.Sub(begin)}, nil
}

// rawSequence is the Pay Score request sequence of one paid session, without
// the engine: create, confirm (the user), complete, register, debit, query.
func rawSequence(ctx context.Context, c *payscore.Client, sb *sandbox.Sandbox, id string) error {
	now := time.Now()
	created, err := c.CreateOrder(ctx, payscore.CreateOrderRequest{ReqSeqID: payscore.ReqSeqID(id, payscore.StepCreate, 1), ReqDate: now,
		ServiceIntroduction: "电动汽车充电", RiskFund: payscore.RiskFund{Amount: 5000}, TimeRange: payscore.TimeRange{Start: now.Add(-time.Hour)}, OpenID: "bench-raw"})
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	if err := sb.Confirm(created.OutOrderNo); err != nil {
		return fmt.Errorf("confirm: %w", err)
	}
	if err := c.CompleteOrder(ctx, payscore.CompleteOrderRequest{OutOrderNo: created.OutOrderNo, Amount: 3,
		TimeRange: payscore.TimeRange{End: now.Add(-time.Minute)}}); err != nil {
		return fmt.Errorf("complete: %w", err)
	}
	reg, err := c.RegisterDeduction(ctx, payscore.RegisterDeductionRequest{ReqSeqID: payscore.ReqSeqID(id, payscore.StepRegister, 1),
		ReqDate: now, Order: payscore.OrderLocator{OutOrderNo: created.OutOrderNo}})
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if _, err := c.Debit(ctx, payscore.DebitRequest{ReqSeqID: payscore.ReqSeqID(id, payscore.StepDebit, 1), ReqDate: now,
		DeductReqSeqID: reg.ReqSeqID, OutTradeNo: reg.OutTradeNo, GoodsDesc: "充电费用", ClientIP: "127.0.0.1"}); err != nil {
		return fmt.Errorf("debit: %w", err)
	}
	o, err := c.QueryOrder(ctx, payscore.OrderLocator{OutOrderNo: created.OutOrderNo})
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	if !o.Paid() {
		return fmt.Errorf("order %s not paid: %s/%s", created.OutOrderNo, o.State, o.StateDescription)
	}
	return nil
}

// concurrently runs work on n goroutines, each looping until d has passed
// (at least once), and returns how many calls succeeded and the time until
// the last one ended. The first error stops everyone.
func concurrently(ctx context.Context, n int, d time.Duration, work func(ctx context.Context, worker, i int) error) (int64, time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var done atomic.Int64
	var once sync.Once
	var first error
	start := time.Now()
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			for i := 0; i == 0 || time.Since(start) < d; i++ {
				if ctx.Err() != nil {
					return
				}
				if err := work(ctx, w, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return done.Load(), time.Since(start), first
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchEngine: whole sessions through the real engine, N at a time, beside
// the raw Pay Score request sequence of a paid session against the same
// sandbox, N at a time.
func benchEngine(ctx context.Context, b *bench) {
	const name = "engine.sessions"
	r, err := newEngineRig(ctx, b)
	if err != nil {
		b.fail(name, fmt.Errorf("set-up: %w", err))
		return
	}
	defer r.close()

	// Baseline first, with its own client and a notify endpoint that only
	// verifies and acknowledges.
	cfg, err := r.sb.ClientConfig(r.sbURL)
	if err != nil {
		b.fail(name, err)
		return
	}
	notifyURL, stopNotify, err := benchServer(payscore.NotifyHandler(cfg.Verifier,
		func(context.Context, payscore.Notification) error { return nil }, payscore.NotifyOptions{}))
	if err != nil {
		b.fail(name, err)
		return
	}
	defer stopNotify()
	cfg.NotifyURL, cfg.HTTPClient, cfg.Logger = notifyURL, &http.Client{Transport: r.tr}, b.log
	raw, err := payscore.New(cfg)
	if err != nil {
		b.fail(name, err)
		return
	}
	rawN, rawT, err := concurrently(ctx, b.sessions, b.duration, func(ctx context.Context, w, i int) error {
		return rawSequence(ctx, raw, r.sb, fmt.Sprintf("raw%s%03d%06d", b.runID, w, i))
	})
	if err != nil {
		b.fail(name, fmt.Errorf("baseline: %w", err))
		return
	}

	chargers := r.fleet.Chargers()
	var mu sync.Mutex
	var confirmToCharging, stopToPaid, total []time.Duration
	n, elapsed, err := concurrently(ctx, b.sessions, b.duration, func(ctx context.Context, w, i int) error {
		t, err := r.session(ctx, chargers[w], fmt.Sprintf("bench-user-%d", w))
		if err == nil {
			mu.Lock()
			confirmToCharging = append(confirmToCharging, t.confirmToCharging)
			stopToPaid = append(stopToPaid, t.stopToPaid)
			total = append(total, t.total)
			mu.Unlock()
		}
		return err
	})
	if err != nil {
		b.fail(name, err)
		return
	}
	r.obs.mu.Lock()
	engineSide := slices.Clone(r.obs.confirmToStart)
	r.obs.mu.Unlock()
	p50, p95 := percentile(confirmToCharging, 0.50), percentile(confirmToCharging, 0.95)
	e50, e95 := percentile(engineSide, 0.50), percentile(engineSide, 0.95)
	b.emit(benchRow{Scenario: name, Figure: float64(n) / elapsed.Seconds(), Unit: "sessions/s create→paid", Ops: n,
		Baseline: float64(rawN) / rawT.Seconds(), BaselineUnit: "raw create→paid sequences/s", BaselineOps: rawN,
		Extra: map[string]float64{"confirm_to_charging_p50_ms": ms(p50), "confirm_to_charging_p95_ms": ms(p95),
			"engine_confirm_to_start_sent_p50_ms": ms(e50), "engine_confirm_to_start_sent_p95_ms": ms(e95),
			"stop_to_paid_p50_ms": ms(percentile(stopToPaid, 0.5)), "session_p50_ms": ms(percentile(total, 0.5)),
			"concurrent": float64(b.sessions)},
		Notes: fmt.Sprintf("%d concurrent; confirm→charging p50 %.0fms p95 %.0fms (engine's confirm→start sent p50 %.1fms p95 %.1fms); stop→paid p50 %.0fms; session p50 %.0fms",
			b.sessions, ms(p50), ms(p95), ms(e50), ms(e95), ms(percentile(stopToPaid, 0.5)), ms(percentile(total, 0.5)))})
}
