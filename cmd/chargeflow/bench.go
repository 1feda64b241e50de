package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

func init() { commands["bench"] = runBench }

// benchScenarios are the scenarios in the order they run. This file is the
// rig they share (flags, rows, printing, timed loops); each scenario lives
// in bench_<name>.go.
var benchScenarios = []struct {
	name string
	run  func(ctx context.Context, b *bench)
}{
	{"fsm", benchFSM},
	{"store", benchStore},
	{"mqtt", benchMQTT},
	{"payscore", benchPayScore},
	{"engine", benchEngine},
	{"reconnect", benchReconnect},
	{"burst", benchBurst},
	{"valley", benchValley},
	{"scale", benchScale}, // opt-in (benchOptIn): minutes long
}

const benchUsage = `usage: chargeflow bench [--scenario fsm,store,mqtt,payscore,engine,reconnect,burst,valley|scale]
                       [--duration 5s] [--redis URL] [--mqtt URL] [--sessions N] [--rate R]
                       [--chargers C] [--connections N] [--json]

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
	sessions int // 0: each scenario's default (benchSessions)
	rate     int // sessions a second in the valley scenario
	chargers int
	// connections bounds the scale scenario's real MQTT connections (0: its default).
	connections int
	given       map[string]bool // the flags given on the command line
	json        bool

	stdout, stderr io.Writer
	log            *slog.Logger // warnings and errors of the pieces under test, to stderr
	brokerLog      *slog.Logger // errors only: mochi warns about every connection closed at shutdown
	runID          string       // unique per run: key prefixes, topic prefixes, client ids

	rows, failed int
	rigs         int // engine rigs set up so far (bench_rig.go)
	prof         *benchProfiles
}

// benchMaxSessions bounds --sessions; the engine scenario, which runs a
// charger and a goroutine per concurrent session, takes fewer.
const (
	benchMaxSessions       = 10_000
	benchMaxEngineSessions = 256
)

// sessionsOr is --sessions, or def when it was not given.
func (b *bench) sessionsOr(def int) int {
	if b.sessions > 0 {
		return b.sessions
	}
	return def
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
	var defaults []string
	for i, s := range benchScenarios {
		names[i] = s.name
		if !benchOptIn[s.name] {
			defaults = append(defaults, s.name)
		}
	}
	scenarios := fs.String("scenario", strings.Join(defaults, ","), "comma-separated scenarios to run: "+strings.Join(names, ", ")+" (scale only when named)")
	duration := fs.Duration("duration", 5*time.Second, "how long the figure, and then its baseline, are measured (per row)")
	redisURL := fs.String("redis", getenv("CHARGEFLOW_REDIS_URL"), "Redis for the store scenario's redis row (default $CHARGEFLOW_REDIS_URL; none: row skipped)")
	mqttURL := fs.String("mqtt", getenv("CHARGEFLOW_MQTT_URL"), "MQTT broker (Mosquitto) for the mqtt scenario's paho row (default $CHARGEFLOW_MQTT_URL; none: row skipped)")
	sessions := fs.Int("sessions", 0, "sessions: concurrent in the engine scenario (default 8, at most 256), confirmed at once in burst (default 200), created at --rate in valley (default 3000), charging in scale (default 1000); at most 10000")
	rate := fs.Int("rate", 200, "sessions created and confirmed a second in the valley scenario")
	chargers := fs.Int("chargers", 200, "chargers with passwords connecting at once in the reconnect scenario (at most 15000); chargers online in scale (default 5000, at most 50000)")
	connections := fs.Int("connections", 0, "scale: real MQTT connections at most (default a fifth of --chargers, 1000 to 10000; at most 18000); the other chargers are multiplexed")
	jsonOut := fs.Bool("json", false, "print one JSON object per row instead of a table")
	var prof benchProfiles
	fs.StringVar(&prof.cpu, "cpuprofile", "", "write a CPU profile to this file (burst: its measured window; otherwise the whole run)")
	fs.StringVar(&prof.mutex, "mutexprofile", "", "write a mutex contention profile to this file (as --cpuprofile)")
	fs.StringVar(&prof.block, "blockprofile", "", "write a blocking profile to this file (as --cpuprofile)")
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
	if *sessions < 0 || *sessions > benchMaxSessions {
		return fmt.Errorf("bench: --sessions must be between 1 and %d (0: each scenario's default), got %d", benchMaxSessions, *sessions)
	}
	if *rate < 1 || *rate > 10000 {
		return fmt.Errorf("bench: --rate must be between 1 and 10000 sessions a second, got %d", *rate)
	}
	if *chargers < 1 || *chargers > 50_000 {
		return fmt.Errorf("bench: --chargers must be between 1 and 50000, got %d", *chargers)
	}
	if *connections < 0 || *connections > scaleMaxConnections {
		return fmt.Errorf("bench: --connections must be between 1 and %d (one process holds at most 20,000 open files here; 0: the default), got %d", scaleMaxConnections, *connections)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
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
	if slices.Contains(selected, "reconnect") && *chargers > 15000 {
		return fmt.Errorf("bench: --chargers must be at most 15000 for the reconnect scenario (real connections; one process holds at most 20,000 open files here), got %d", *chargers)
	}
	if slices.Contains(selected, "engine") && *sessions > benchMaxEngineSessions {
		return fmt.Errorf("bench: --sessions must be at most %d for the engine scenario (one simulated charger and goroutine each), got %d", benchMaxEngineSessions, *sessions)
	}

	prof.windowed = slices.Contains(selected, "burst")
	if err := prof.start(); err != nil {
		return err
	}
	defer func() {
		if perr := prof.stop(); perr != nil {
			fmt.Fprintln(stderr, perr)
		}
	}()

	var id [4]byte
	_, _ = rand.Read(id[:])
	b := &bench{duration: *duration, redisURL: *redisURL, mqttURL: *mqttURL, sessions: *sessions, rate: *rate, chargers: *chargers,
		connections: *connections, given: given, json: *jsonOut, prof: &prof,
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
		limit := 4*b.duration + 2*time.Minute
		if budget := benchBudgets[s.name]; budget != nil {
			limit = budget(b)
		}
		sctx, cancel := context.WithTimeout(ctx, limit)
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
