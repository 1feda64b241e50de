package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

// benchScale: C chargers online (presence and status heartbeats) and S
// sessions charging (a meter sample every 30 s each) on one service for D,
// then a kill -9 of the service and a restart with S sessions in flight
// (docs/bench.md "scale"). The service is a child process: this binary
// with `serve`, on the embedded stack (bbolt in a temp dir, the embedded
// broker) and, given --redis and --mqtt, on Redis and the external broker.
// The Pay Score sandbox runs in the bench and is reached over HTTP.
//
// Rows per stack: .meter (meter published → visible in the store, p99,
// beside the same broker's own publish→receive p99), .rss (peak resident
// set beside the service's own at start, with heap, CPU and flatness in
// extra), .store (store bytes per session beside the session's own JSON)
// and .restart (kill -9 → the first command out at its charger, beside a
// bare start of the same binary to /healthz).
func benchScale(ctx context.Context, b *bench) {
	o := b.scaleOptions()
	if o.sessions > o.chargers {
		b.fail("scale", fmt.Errorf("--sessions %d must be at most --chargers %d (one session per charger)", o.sessions, o.chargers))
		return
	}
	exe, err := os.Executable()
	if err != nil {
		b.fail("scale", fmt.Errorf("the bench's own binary: %w", err))
		return
	}
	o.exe = exe
	o.stack = "embedded"
	b.scaleStack(ctx, o)
	row := "scale." + redisKind(b.redisURL) + "+mosquitto"
	switch {
	case b.redisURL != "" && b.mqttURL != "":
		o.stack, o.redisURL, o.mqttURL = redisKind(b.redisURL)+"+mosquitto", b.redisURL, b.mqttURL
		b.scaleStack(ctx, o)
	case b.redisURL != "" || b.mqttURL != "":
		b.skip(row, "needs both --redis and --mqtt")
	default:
		b.skip(row, "no --redis and --mqtt (or CHARGEFLOW_REDIS_URL and CHARGEFLOW_MQTT_URL)")
	}
}

// The scale scenario's sizes when the flags do not give them: a run of a
// few minutes on two cores. The targets are 50,000 chargers and
// 10,000 sessions (--chargers 50000 --sessions 10000 --duration 5m).
const (
	scaleChargers = 5000
	scaleSessions = 1000
	scaleDuration = time.Minute
	// By default a fifth of the chargers have real connections, at least
	// 1,000 and at most 10,000: each costs the embedded stack a slow
	// password hash at registration and at every (re)connect storm.
	scaleMinConnections, scaleConnections = 1000, 10_000
	// scaleMaxConnections bounds --connections: one process holds at most
	// 20,000 open files here (the broker's side lives in the service).
	scaleMaxConnections = 18_000
)

// benchOptIn are the scenarios the default list leaves out: scale takes
// minutes, and runs only when named.
var benchOptIn = map[string]bool{"scale": true}

func init() { benchBudgets["scale"] = scaleBudget }

type scaleOptions struct {
	chargers, sessions, connections int
	duration                        time.Duration
	exe, stack                      string
	redisURL, mqttURL               string
}

func (b *bench) scaleOptions() scaleOptions {
	o := scaleOptions{chargers: scaleChargers, sessions: b.sessionsOr(scaleSessions), duration: scaleDuration}
	if b.given["chargers"] {
		o.chargers = b.chargers
	}
	if b.given["duration"] {
		o.duration = b.duration
	}
	o.connections = min(o.chargers, max(scaleMinConnections, min(o.chargers/5, scaleConnections)))
	if b.connections > 0 {
		o.connections = min(o.chargers, b.connections)
	}
	return o
}

// scaleBudget bounds the scenario (runBench's deadline against a hang):
// per stack, set-up, registration and connection of the fleet, the
// sessions' ramp, the run, the restart and the baselines.
func scaleBudget(b *bench) time.Duration {
	o := b.scaleOptions()
	per := 5*time.Minute + time.Duration(o.chargers)*30*time.Millisecond + time.Duration(o.connections)*40*time.Millisecond +
		time.Duration(o.sessions)*60*time.Millisecond + 2*o.duration
	return 2 * per
}

func (b *bench) scaleStack(ctx context.Context, o scaleOptions) {
	r := &scaleRun{b: b, o: o, probes: map[string]time.Time{}}
	defer r.close()
	if err := r.run(ctx); err != nil {
		b.fail("scale."+o.stack, err)
		return
	}
	r.emit()
}

// scaleSample is one reading of the service's memory and CPU.
type scaleSample struct {
	at             time.Time
	rss, heap, cpu float64 // bytes, bytes, CPU seconds
	restarted      bool    // of the process started after the kill
}

// scaleRun is one stack's run: its service, fleet, feed and figures.
type scaleRun struct {
	b *bench
	o scaleOptions

	dir                         string
	sb                          *sandbox.Sandbox
	tr                          *http.Transport
	api                         *scaleAPI
	env                         map[string]string
	childMu                     sync.Mutex
	child                       *scaleChild
	firstPID                    int
	feed                        *scaleFeed
	fleet                       *scaleFleet
	topics                      charger.Topics
	brokerURL, svcUser, svcPass string
	ids                         []string
	sessions                    []string // session ids
	sessionChargers             []string // session i runs on sessionChargers[i]
	closers                     []func()

	sampleMu sync.Mutex
	samples  []scaleSample

	probeMu sync.Mutex
	probes  map[string]time.Time // session → when its stop reached the charger (after the restart)

	f scaleFigures
}

func (r *scaleRun) onClose(f func()) { r.closers = append(r.closers, f) }

func (r *scaleRun) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

func (r *scaleRun) current() *scaleChild {
	r.childMu.Lock()
	defer r.childMu.Unlock()
	return r.child
}

// password is a real charger's broker password.
func (r *scaleRun) password(id string) string { return "pw-" + id }

func (r *scaleRun) run(ctx context.Context) error {
	if err := r.setUp(ctx); err != nil {
		return fmt.Errorf("set-up: %w", err)
	}
	if err := r.register(ctx); err != nil {
		return fmt.Errorf("register the chargers: %w", err)
	}
	if err := r.connect(ctx); err != nil {
		return fmt.Errorf("connect the fleet: %w", err)
	}
	if err := r.ramp(ctx); err != nil {
		return fmt.Errorf("sessions: %w", err)
	}
	if err := r.measure(ctx); err != nil {
		return err
	}
	if err := r.restart(ctx); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	if err := r.bareStart(ctx); err != nil {
		return fmt.Errorf("baseline start: %w", err)
	}
	return nil
}

func (r *scaleRun) setUp(ctx context.Context) error {
	b := r.b
	dir, err := os.MkdirTemp("", "chargeflow-bench-scale-")
	if err != nil {
		return err
	}
	r.dir = dir
	r.onClose(func() { os.RemoveAll(dir) })
	r.tr = &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	r.onClose(r.tr.CloseIdleConnections)

	sb, err := sandbox.New(sandbox.Options{NotifyBackoff: 200 * time.Millisecond, NotifyTimeout: 5 * time.Second,
		NotifyClient: &http.Client{Transport: r.tr}, Logger: b.log})
	if err != nil {
		return err
	}
	r.sb = sb
	r.onClose(func() { sb.Close() })
	sbURL, stopSB, err := benchServer(sb.Handler())
	if err != nil {
		return err
	}
	r.onClose(stopSB)
	r.onClose(func() { sb.Close() }) // before its server: abandon notifications in flight

	env, err := r.config(sbURL, "s", filepath.Join(dir, "data"))
	if err != nil {
		return err
	}
	r.env = env
	r.api = &scaleAPI{hc: &http.Client{Transport: r.tr, Timeout: 30 * time.Second}, base: env["CHARGEFLOW_PUBLIC_URL"],
		appToken: b.runID + "-app", opToken: b.runID + "-operator"}
	if r.o.redisURL != "" {
		r.onClose(func() { r.removeRedisKeys(env["CHARGEFLOW_REDIS_PREFIX"]) })
	} else {
		r.brokerURL = "tcp://" + env["CHARGEFLOW_MQTT_LISTEN"]
	}
	if r.o.mqttURL != "" {
		// After the service stopped (closers run in reverse): it would
		// take every cleared retained state for a charger's message.
		r.onClose(func() {
			dropPersistentSession(b, r.brokerURL, "chargeflow-"+env["CHARGEFLOW_INSTANCE_ID"], r.svcUser, r.svcPass)
			if r.fleet != nil {
				r.fleet.forget(b, r.svcUser, r.svcPass, r.password)
			}
		})
	}

	c := &scaleChild{exe: r.o.exe, env: scaleChildEnvironment(env), httpURL: r.api.base, logPath: filepath.Join(dir, "serve.log")}
	if err := c.start(); err != nil {
		return err
	}
	r.child, r.firstPID = c, c.pid()
	r.onClose(func() { r.current().stop() })
	if _, err := c.waitOK(ctx, r.api.hc, "/readyz", time.Minute); err != nil {
		return err
	}
	rss, _, err := procUsage(c.pid())
	if err != nil {
		return err
	}
	heap, _ := r.api.heapInuse(ctx)
	r.f.rssStart, r.f.heapStart = rss, heap

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	r.onClose(func() { cancel(); wg.Wait() })
	r.feed = newScaleFeed(r.api)
	wg.Go(func() { r.feed.run(runCtx) })
	wg.Go(func() { r.sample(runCtx) })
	// The feed starts with what happens from its first read on.
	if !waitFor(ctx, 10*time.Second, r.feed.connected.Load) {
		return errors.New("the change feed (GET /v1/events) did not answer within 10s")
	}
	return nil
}

// config is the service's configuration: letter names its Redis key prefix
// (runID+letter), dataDir its embedded store.
func (r *scaleRun) config(sbURL, letter, dataDir string) (map[string]string, error) {
	b := r.b
	httpPort, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	cr := r.sb.Credentials()
	r.topics = charger.Topics{Prefix: b.runID + "/ev/v1"}
	env := map[string]string{
		"CHARGEFLOW_HTTP_ADDR":  "127.0.0.1:" + strconv.Itoa(httpPort),
		"CHARGEFLOW_PUBLIC_URL": "http://127.0.0.1:" + strconv.Itoa(httpPort),
		"CHARGEFLOW_DATA_DIR":   dataDir, "CHARGEFLOW_MQTT_PREFIX": r.topics.Prefix,
		"CHARGEFLOW_INSTANCE_ID":    b.runID + "-scale" + letter,
		"CHARGEFLOW_HUIFU_BASE_URL": sbURL, "CHARGEFLOW_HUIFU_SYS_ID": cr.SysID, "CHARGEFLOW_HUIFU_PRODUCT_ID": cr.ProductID,
		"CHARGEFLOW_HUIFU_MERCHANT_ID": cr.HuifuID, "CHARGEFLOW_HUIFU_PRIVATE_KEY": cr.MerchantPrivateKey,
		"CHARGEFLOW_HUIFU_PUBLIC_KEY": cr.HuifuPublicKey, "CHARGEFLOW_PAYSCORE_SERVICE_ID": cr.ServiceID,
		"CHARGEFLOW_APP_TOKENS": "bench:" + b.runID + "-app", "CHARGEFLOW_OPERATOR_TOKENS": "bench:" + b.runID + "-operator",
		"CHARGEFLOW_RECONCILE_AT": "off",
	}
	if r.o.redisURL != "" {
		env["CHARGEFLOW_REDIS_URL"], env["CHARGEFLOW_REDIS_PREFIX"] = r.o.redisURL, b.runID+letter
	}
	if r.o.mqttURL == "" {
		mqttPort, err := freeLoopbackPort()
		if err != nil {
			return nil, err
		}
		r.svcUser, r.svcPass = "chargeflow-bench", b.runID+"-service"
		env["CHARGEFLOW_MQTT_LISTEN"] = "127.0.0.1:" + strconv.Itoa(mqttPort)
	} else {
		u, err := url.Parse(r.o.mqttURL)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("--mqtt: not a broker URL: %q", r.o.mqttURL)
		}
		if u.User != nil {
			r.svcUser = u.User.Username()
			r.svcPass, _ = u.User.Password()
			u.User = nil
		}
		r.brokerURL = u.String()
		env["CHARGEFLOW_MQTT_URL"] = r.brokerURL
	}
	if r.svcUser != "" {
		env["CHARGEFLOW_MQTT_USERNAME"], env["CHARGEFLOW_MQTT_PASSWORD"] = r.svcUser, r.svcPass
	}
	return env, nil
}

// sample reads the service's memory and CPU every few seconds until ctx ends.
func (r *scaleRun) sample(ctx context.Context) {
	every := min(max(r.o.duration/40, time.Second), 5*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c := r.current()
		if c == nil || !c.running() {
			continue
		}
		rss, cpu, err := procUsage(c.pid())
		if err != nil {
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		heap, _ := r.api.heapInuse(hctx)
		cancel()
		r.sampleMu.Lock()
		r.samples = append(r.samples, scaleSample{at: time.Now(), rss: rss, heap: heap, cpu: cpu, restarted: c.pid() != r.firstPID})
		r.sampleMu.Unlock()
	}
}

// register puts every charger through the API, 16 at a time: the real
// ones with their password (hashed by the service), the multiplexed ones
// without (they connect on the service's account).
func (r *scaleRun) register(ctx context.Context) error {
	real, mux := scaleSplit(r.o.chargers, r.o.connections)
	r.ids = make([]string, r.o.chargers)
	for i := range r.ids {
		r.ids[i] = fmt.Sprintf("%s-%05d", r.b.runID, i)
	}
	r.fleet = newScaleFleet(r.topics, r.brokerURL, r.b.runID+"-scale", r.ids, real, mux, r.b.log)
	start := time.Now()
	err := scaleParallel(ctx, 16, len(r.ids), func(ctx context.Context, i int) error {
		body := map[string]any{"connectors": []int{1}, "tariff_id": "default"}
		if i < real {
			body["password"] = r.password(r.ids[i])
		}
		_, err := r.api.call(ctx, http.MethodPut, "/v1/chargers/"+r.ids[i], false, nil, body, nil)
		return err
	})
	r.f.registered = time.Since(start)
	return err
}

// connect opens the fleet's connections and waits until the service has
// every charger online.
func (r *scaleRun) connect(ctx context.Context) error {
	r.fleet.onCommand = r.onCommand
	r.fleet.onMeter = r.feed.meterSent
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute+time.Duration(r.o.connections)*30*time.Millisecond)
	defer cancel()
	r.onClose(r.fleet.close)
	if err := r.fleet.connect(cctx, 64, r.password, r.svcUser, r.svcPass); err != nil {
		return err
	}
	r.f.connected = time.Since(start)
	// A stack that cannot bring the whole fleet online in time is measured
	// with the chargers it has (the rows say how many): the sessions run on
	// online chargers.
	limit := time.Minute + time.Duration(r.o.chargers)*5*time.Millisecond
	if !waitFor(ctx, limit, func() bool { on, _ := r.feed.counts(); return on >= r.o.chargers }) {
		if err := ctx.Err(); err != nil {
			return err
		}
		on, _ := r.feed.counts()
		r.b.log.Warn("bench: scale: not every charger came online; measuring with those that did", "online", on, "chargers", r.o.chargers, "after", time.Since(start).Round(time.Second))
	}
	r.f.online = time.Since(start)
	r.f.onlineAtStart, _ = r.feed.counts()
	r.f.setupConnects = r.fleet.connects.Load()
	return nil
}

// onCommand is the fleet's: stops that reach a probe's charger after the
// restart are timed.
func (r *scaleRun) onCommand(_ string, cmd charger.Command, at time.Time) {
	if cmd.Type != charger.CmdStop {
		return
	}
	r.probeMu.Lock()
	if t, ok := r.probes[cmd.SessionID]; ok && t.IsZero() {
		r.probes[cmd.SessionID] = at
	}
	r.probeMu.Unlock()
}

// ramp creates the S sessions, 32 at a time, each confirmed by its user at
// once, and waits until all charge.
func (r *scaleRun) ramp(ctx context.Context) error {
	r.f.memBefore = r.storeBytes(ctx)
	r.sessions = make([]string, r.o.sessions)
	r.sessionChargers = make([]string, 0, r.o.sessions)
	online := r.feed.onlineIDs(r.ids)
	if len(online) < r.o.sessions {
		return fmt.Errorf("%d of %d chargers online, fewer than the %d sessions", len(online), r.o.chargers, r.o.sessions)
	}
	for i := range r.o.sessions {
		r.sessionChargers = append(r.sessionChargers, online[i*len(online)/r.o.sessions])
	}
	start := time.Now()
	err := scaleParallel(ctx, 32, r.o.sessions, func(ctx context.Context, i int) error {
		id := r.sessionChargers[i]
		var v struct {
			ID         string `json:"id"`
			OutOrderNo string `json:"out_order_no"`
		}
		if _, err := r.api.call(ctx, http.MethodPost, "/v1/sessions", true, map[string]string{"Idempotency-Key": r.b.runID + "-" + strconv.Itoa(i)},
			map[string]any{"charger_id": id, "connector": 1, "openid": "bench-scale-" + strconv.Itoa(i), "max_amount_fen": 5000}, &v); err != nil {
			return err
		}
		r.sessions[i] = v.ID
		if err := r.sb.Confirm(v.OutOrderNo); err != nil {
			return fmt.Errorf("confirm %s: %w", v.ID, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.f.created = time.Since(start)
	limit := time.Minute + time.Duration(r.o.sessions)*20*time.Millisecond
	if !waitFor(ctx, limit, func() bool { _, ch := r.feed.counts(); return ch >= r.o.sessions }) {
		_, ch := r.feed.counts()
		return fmt.Errorf("%d of %d sessions charging %s after the first was created", ch, r.o.sessions, time.Since(start).Round(time.Second))
	}
	r.f.ramp = time.Since(start)
	return nil
}

// measure runs the fleet for the duration with every meter sample timed,
// the broker's own latency measured in its second half, then lets the
// samples in flight arrive.
func (r *scaleRun) measure(ctx context.Context) error {
	c := r.current()
	_, cpu0, err := procUsage(c.pid())
	if err != nil {
		return err
	}
	self0, ev0, pub0 := selfCPU(), r.feed.events.Load(), r.fleet.published.Load()
	r.f.windowStart = time.Now()
	r.feed.setRecord(true)
	var base []time.Duration
	var baseErr error
	half := time.NewTimer(r.o.duration / 2)
	end := time.NewTimer(r.o.duration)
	defer half.Stop()
	defer end.Stop()
	var wg sync.WaitGroup
	for done := false; !done; {
		select {
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		case <-half.C:
			wg.Go(func() { base, baseErr = r.brokerPaced(ctx, r.o.duration/4) })
		case <-end.C:
			done = true
		}
	}
	r.feed.setRecord(false)
	r.f.windowEnd = time.Now()
	_, cpu1, err := procUsage(c.pid())
	if err != nil {
		return err
	}
	wall := r.f.windowEnd.Sub(r.f.windowStart).Seconds()
	r.f.cpu = (cpu1 - cpu0) / wall
	r.f.benchCPU = (selfCPU() - self0) / wall
	r.f.commitsPerS = float64(r.feed.events.Load()-ev0) / wall
	r.f.publishedPerS = float64(r.fleet.published.Load()-pub0) / wall
	r.f.memAfter = r.storeBytes(ctx)
	wg.Wait()
	if baseErr != nil {
		return fmt.Errorf("broker baseline: %w", baseErr)
	}
	r.f.brokerLat = base
	waitFor(ctx, 10*time.Second, func() bool { _, left := r.feed.latencies(); return left == 0 })
	r.f.meterLat, r.f.meterUnseen = r.feed.latencies()
	if len(r.f.meterLat) == 0 {
		return fmt.Errorf("no meter sample was seen stored in %s (%d published)", r.o.duration, r.f.meterUnseen)
	}
	var view []byte
	if view, err = r.api.call(ctx, http.MethodGet, "/v1/sessions/"+r.sessions[0], false, nil, nil, nil); err != nil {
		return err
	}
	r.f.viewBytes = float64(len(view))
	return nil
}

// scaleParallel runs work(i) for i < n, width at a time; the first error
// stops the rest.
func scaleParallel(ctx context.Context, width, n int, work func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range min(width, n) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				if err := work(ctx, i); err != nil {
					first.CompareAndSwap(nil, err)
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return err
	}
	return ctx.Err()
}
