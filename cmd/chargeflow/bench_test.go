package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/chargeflow/chargeflow/internal/testenv"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
)

// These tests check what chargeflow bench does — every scenario row has a
// figure, a baseline and a ratio, failures are reported per row, nothing is
// left running — and never how fast anything is: figures are for people to
// read (docs/bench.md), not for tests to assert.

func noEnv(string) string { return "" }

// runBenchCmd runs chargeflow bench through run and returns stdout, stderr
// and run's error. It checks that the command leaves no goroutine behind.
func runBenchCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, append([]string{"bench"}, args...), noEnv, &out, &errOut)
	return out.String(), errOut.String(), err
}

var columns = regexp.MustCompile(`\s{2,}`)

// tableRows reads the table: scenario → [figure, baseline, ratio, notes].
// Comment lines start with '#'; the header's first cell is "scenario".
func tableRows(t *testing.T, out string) map[string][]string {
	t.Helper()
	rows := map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "scenario ") {
			continue
		}
		cells := columns.Split(strings.TrimSpace(line), -1)
		if _, dup := rows[cells[0]]; dup {
			t.Errorf("row %s printed twice", cells[0])
		}
		rows[cells[0]] = cells[1:]
	}
	return rows
}

// leadingNumber parses "2.10M Apply/s" as 2.1e6.
func leadingNumber(cell string) (float64, bool) {
	num, _, _ := strings.Cut(cell, " ")
	mult := 1.0
	switch {
	case strings.HasSuffix(num, "M"):
		mult, num = 1e6, strings.TrimSuffix(num, "M")
	case strings.HasSuffix(num, "k"):
		mult, num = 1e3, strings.TrimSuffix(num, "k")
	}
	v, err := strconv.ParseFloat(num, 64)
	return v * mult, err == nil
}

// checkTable checks that exactly the want rows were printed, each one
// measured (see checkRow).
func checkTable(t *testing.T, out string, want ...string) {
	t.Helper()
	rows := tableRows(t, out)
	for _, name := range want {
		cells, ok := rows[name]
		if !ok {
			t.Errorf("no row %s", name)
			continue
		}
		checkRow(t, name, cells)
		delete(rows, name)
	}
	for name, cells := range rows {
		t.Errorf("unexpected row %s %q", name, cells)
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// checkRow checks a positive figure and baseline, each with a unit, and a
// ratio > 0.
func checkRow(t *testing.T, name string, cells []string) {
	t.Helper()
	if len(cells) < 3 {
		t.Errorf("row %s: %q, want figure, baseline, ratio", name, cells)
		return
	}
	for i, what := range []string{"figure", "baseline"} {
		v, ok := leadingNumber(cells[i])
		if !ok || v <= 0 || !strings.Contains(cells[i], " ") {
			t.Errorf("row %s: %s %q is not a positive number with a unit", name, what, cells[i])
		}
	}
	if r, err := strconv.ParseFloat(cells[2], 64); err != nil || r <= 0 {
		t.Errorf("row %s: ratio %q is not > 0", name, cells[2])
	}
}

func TestBenchQuickScenarios(t *testing.T) {
	redis := testenv.Redis(t) // a private redis-server unless CHARGEFLOW_TEST_REDIS_URL is set
	out, errOut, err := runBenchCmd(t, "--scenario", "fsm,store,payscore", "--duration", "200ms", "--redis", redis)
	if err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s\nstdout:\n%s", err, errOut, out)
	}
	checkTable(t, out, "fsm.apply", "store.bolt.commit", "store.bolt.parallel", "store.redis.commit", "store.redis.commit_wait", "payscore.sign+verify")
}

func TestBenchMQTT(t *testing.T) {
	mqtt := testenv.MQTT(t)
	out, errOut, err := runBenchCmd(t, "--scenario", "mqtt", "--duration", "200ms", "--mqtt", mqtt)
	if err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s\nstdout:\n%s", err, errOut, out)
	}
	checkTable(t, out, "mqtt.embedded", "mqtt.embedded.store", "mqtt.embedded.burst", "mqtt.mosquitto")
}

// Without --redis and --mqtt the rows that need them are skipped (said on
// stderr), not failed.
func TestBenchSkipsExternalRows(t *testing.T) {
	out, errOut, err := runBenchCmd(t, "--scenario", "store", "--duration", "100ms")
	if err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s", err, errOut)
	}
	checkTable(t, out, "store.bolt.commit", "store.bolt.parallel")
	if !strings.Contains(errOut, "store.redis.commit skipped") || !strings.Contains(errOut, "store.redis.commit_wait skipped") {
		t.Errorf("stderr does not say the redis row was skipped:\n%s", errOut)
	}
}

// singleJSONRow reads the one row a --json run printed.
func singleJSONRow(t *testing.T, out string) benchRow {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one JSON row, got:\n%s", out)
	}
	var row benchRow
	if err := json.Unmarshal([]byte(lines[0]), &row); err != nil {
		t.Fatalf("row is not JSON: %v\n%s", err, out)
	}
	return row
}

func TestBenchEngine(t *testing.T) {
	out, errOut, err := runBenchCmd(t, "--scenario", "engine", "--sessions", "3", "--duration", "200ms", "--json")
	if err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s\nstdout:\n%s", err, errOut, out)
	}
	row := singleJSONRow(t, out)
	if row.Scenario != "engine.sessions" || row.Error != "" {
		t.Fatalf("row %+v", row)
	}
	if row.Figure <= 0 || row.Baseline <= 0 || row.Ratio <= 0 || row.Unit == "" || row.BaselineUnit == "" {
		t.Errorf("figure %g %q, baseline %g %q, ratio %g", row.Figure, row.Unit, row.Baseline, row.BaselineUnit, row.Ratio)
	}
	// Every one of the 3 concurrent sessions ran at least once, to paid.
	if row.Ops < 3 || row.BaselineOps < 3 {
		t.Errorf("%d sessions and %d raw sequences, want at least 3 each", row.Ops, row.BaselineOps)
	}
	for _, k := range []string{"confirm_to_charging_p50_ms", "confirm_to_charging_p95_ms", "engine_confirm_to_start_sent_p50_ms"} {
		if row.Extra[k] <= 0 {
			t.Errorf("extra %s = %g, want > 0", k, row.Extra[k])
		}
	}
}

// A scenario that fails prints its error in its row; the others still run
// and the command fails.
func TestBenchReportsFailedRows(t *testing.T) {
	// Nothing listens on port 1: the redis row fails at once.
	out, _, err := runBenchCmd(t, "--scenario", "store,fsm", "--duration", "100ms", "--redis", "redis://127.0.0.1:1/0")
	if err == nil || !strings.Contains(err.Error(), "2 of 5 rows failed") {
		t.Fatalf("err = %v, want 2 of 5 rows failed\n%s", err, out)
	}
	rows := tableRows(t, out)
	for _, name := range []string{"store.redis.commit", "store.redis.commit_wait"} {
		if cells := rows[name]; len(cells) == 0 || !strings.HasPrefix(cells[0], "error: ") {
			t.Errorf("redis row %s %q, want an error", name, cells)
		}
	}
	for _, name := range []string{"store.bolt.commit", "store.bolt.parallel", "fsm.apply"} {
		checkRow(t, name, rows[name])
	}
	if len(rows) != 5 {
		t.Errorf("%d rows, want 5:\n%s", len(rows), out)
	}
}

func TestBenchFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--scenario", "nope"},
		{"--scenario", ","},
		{"--duration", "0s"},
		{"--sessions", "-1"},
		{"--sessions", "10001"},
		{"--chargers", "50001"},
		{"--scenario", "reconnect", "--chargers", "15001"},
		{"--connections", "18001"},
		{"--scenario", "engine", "--sessions", "300"},
		{"--rate", "0"},
		{"extra"},
	} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), append([]string{"bench"}, args...), noEnv, &out, &errOut); err == nil {
			t.Errorf("bench %q: no error", args)
		}
		if out.Len() != 0 {
			t.Errorf("bench %q printed rows:\n%s", args, out.String())
		}
	}
}

// TestBenchReconnect: a storm of chargers with passwords on the embedded
// broker, first with every password hashed the slow way, then verified.
func TestBenchReconnect(t *testing.T) {
	out, errOut, err := runBenchCmd(t, "--scenario", "reconnect", "--chargers", "5")
	if err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out, errOut)
	}
	checkTable(t, out, "reconnect.first", "reconnect.again")
	if _, _, err := runBenchCmd(t, "--scenario", "reconnect", "--chargers", "0"); err == nil || !strings.Contains(err.Error(), "--chargers") {
		t.Fatalf("--chargers 0: %v", err)
	}
}

// TestBenchBurst: a tiny burst on the embedded stack and on Redis +
// Mosquitto; every row measured, nothing left running (runBenchCmd).
func TestBenchBurst(t *testing.T) {
	redis, mqtt := testenv.Redis(t), testenv.MQTT(t)
	out, errOut, err := runBenchCmd(t, "--scenario", "burst", "--sessions", "4", "--redis", redis, "--mqtt", mqtt)
	if err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s\nstdout:\n%s", err, errOut, out)
	}
	checkTable(t, out, "burst.embedded", "burst.redis+mosquitto")
}

// TestBenchBurstProfiles: --cpuprofile, --mutexprofile and --blockprofile
// write pprof files (gzipped protocol buffers) of the burst's window.
func TestBenchBurstProfiles(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{"--cpuprofile": "cpu.prof", "--mutexprofile": "mutex.prof", "--blockprofile": "block.prof"}
	args := []string{"--scenario", "burst", "--sessions", "4"}
	for flag, name := range files {
		args = append(args, flag, filepath.Join(dir, name))
	}
	out, errOut, err := runBenchCmd(t, args...)
	if err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s\nstdout:\n%s", err, errOut, out)
	}
	checkTable(t, out, "burst.embedded")
	for flag, name := range files {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", flag, err)
		}
		if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("%s wrote %d bytes, not a gzipped profile", flag, len(b))
		}
	}
}

// TestBenchValley: a tiny valley on the embedded stack, as JSON: every
// session either reached its charger's start or is counted as missed, and
// the row without --redis/--mqtt is skipped, not failed.
func TestBenchValley(t *testing.T) {
	out, errOut, err := runBenchCmd(t, "--scenario", "valley", "--sessions", "4", "--rate", "50", "--json")
	if err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s\nstdout:\n%s", err, errOut, out)
	}
	row := singleJSONRow(t, out)
	if row.Scenario != "valley.embedded" || row.Error != "" {
		t.Fatalf("row %+v", row)
	}
	if row.Figure <= 0 || row.Baseline <= 0 || row.Ratio <= 0 {
		t.Errorf("figure %g, baseline %g, ratio %g", row.Figure, row.Baseline, row.Ratio)
	}
	missed, ok := row.Extra["missed_start"]
	if !ok {
		t.Errorf("no extra missed_start: %v", row.Extra)
	}
	if got := float64(row.Ops) + missed + row.Extra["failed_before_confirm"]; got != 4 || row.BaselineOps != 4 {
		t.Errorf("%d started + %g missed + %g failed, %d baseline messages; want 4 sessions and 4 messages",
			row.Ops, missed, row.Extra["failed_before_confirm"], row.BaselineOps)
	}
	for _, k := range []string{"confirm_to_start_received_p50_ms", "engine_confirm_to_start_sent_p99_ms", "broker_pub_to_recv_p99_ms"} {
		if row.Extra[k] <= 0 {
			t.Errorf("extra %s = %g, want > 0", k, row.Extra[k])
		}
	}
	if !strings.Contains(errOut, "valley.redis+mosquitto skipped") {
		t.Errorf("stderr does not say the redis+mosquitto row was skipped:\n%s", errOut)
	}
}

// TestBenchBurstCluster: on a Redis Cluster the row says so, and the run's
// keys are removed from every primary afterwards.
func TestBenchBurstCluster(t *testing.T) {
	cluster, mqtt := testenv.RedisClusterURL(t), testenv.MQTT(t)
	out, errOut, err := runBenchCmd(t, "--scenario", "burst", "--sessions", "3", "--redis", cluster, "--mqtt", mqtt)
	if err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s\nstdout:\n%s", err, errOut, out)
	}
	checkTable(t, out, "burst.embedded", "burst.redis-cluster+mosquitto")
	m := regexp.MustCompile(`run (cfbench[0-9a-f]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no run id in:\n%s", out)
	}
	c, err := redisstore.NewClient(cluster, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("%s is not a cluster URL", cluster)
	}
	ctx := context.Background()
	if err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		keys, _, err := node.Scan(ctx, 0, m[1]+"*", 1000).Result()
		if err == nil && len(keys) > 0 {
			t.Errorf("node %s keeps %d keys of the run, e.g. %s", node.Options().Addr, len(keys), keys[0])
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestBenchScale: a small scale run on the embedded stack and on Redis +
// Mosquitto, the service a child process (this test binary as chargeflow,
// TestMain), some chargers multiplexed: every row measured, the restart
// happened with the sessions in flight, the run's Redis keys are removed,
// and nothing is left running (runBenchCmd checks goroutines; the child
// is waited for).
func TestBenchScale(t *testing.T) {
	redisURL, mqtt := testenv.Redis(t), testenv.MQTT(t)
	o, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(o)
	defer rc.Close()
	ctx := context.Background()
	before, err := rc.Keys(ctx, "cfbench*").Result()
	if err != nil {
		t.Fatal(err)
	}
	// runBenchCmd's, with room for two stacks of set-up, run and restart.
	leaks := goleak.IgnoreCurrent()
	rctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err = run(rctx, []string{"bench", "--scenario", "scale", "--chargers", "200", "--sessions", "20", "--connections", "60",
		"--duration", "20s", "--redis", redisURL, "--mqtt", mqtt, "--json"}, noEnv, &stdout, &stderr)
	out := stdout.String()
	if err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s\nstdout:\n%s", err, stderr.String(), out)
	}
	goleak.VerifyNone(t, leaks)
	rows := map[string]benchRow{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r benchRow
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("row is not JSON: %v\n%s", err, line)
		}
		rows[r.Scenario] = r
	}
	if len(rows) != 8 {
		t.Errorf("%d rows, want 4 per stack:\n%s", len(rows), out)
	}
	for _, stack := range []string{"scale.embedded", "scale.redis+mosquitto"} {
		checkScaleRows(t, rows, stack, 20)
	}
	after, err := rc.Keys(ctx, "cfbench*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range after {
		if !slices.Contains(before, k) {
			t.Errorf("Redis key %s of the run left", k)
			break
		}
	}
}

// checkScaleRows checks the four rows of one stack.
func checkScaleRows(t *testing.T, rows map[string]benchRow, stack string, sessions int) {
	t.Helper()
	for _, name := range []string{".meter", ".rss", ".store", ".restart"} {
		r, ok := rows[stack+name]
		if !ok {
			t.Errorf("no row %s%s", stack, name)
			continue
		}
		if r.Error != "" || r.Figure <= 0 || r.Baseline <= 0 || r.Ratio <= 0 || r.Unit == "" || r.BaselineUnit == "" {
			t.Errorf("row %s: %+v", r.Scenario, r)
		}
		if r.Extra["sessions"] != float64(sessions) || r.Extra["mux_chargers"] <= 0 || r.Extra["real_connections"] <= 0 {
			t.Errorf("row %s: sessions %g, mux chargers %g, real connections %g", r.Scenario, r.Extra["sessions"],
				r.Extra["mux_chargers"], r.Extra["real_connections"])
		}
	}
	restart := rows[stack+".restart"]
	// The kill -9 happened with every session charging, and they were all
	// still active after the restart; the stops asked after it reached
	// their chargers on both kinds of connection.
	if restart.Extra["in_flight"] != float64(sessions) || restart.Extra["charging_after"] < float64(sessions-2) {
		t.Errorf("%s: %g in flight, %g active after, want %d", restart.Scenario, restart.Extra["in_flight"], restart.Extra["charging_after"], sessions)
	}
	for _, k := range []string{"to_ready_ms", "to_outbox_caught_up_ms", "to_command_real_ms", "to_command_mux_ms", "bare_healthz_ms"} {
		if restart.Extra[k] <= 0 {
			t.Errorf("%s: %s = %g, want > 0", restart.Scenario, k, restart.Extra[k])
		}
	}
	if meter := rows[stack+".meter"]; meter.Ops == 0 || meter.Extra["commits_per_s"] <= 0 {
		t.Errorf("%s: %d samples seen stored, %g commits/s", meter.Scenario, meter.Ops, meter.Extra["commits_per_s"])
	}
}
