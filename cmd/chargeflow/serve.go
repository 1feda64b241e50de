package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/chargeflow/chargeflow/api"
	"github.com/chargeflow/chargeflow/api/board"
	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/charger/sim"
	"github.com/chargeflow/chargeflow/metrics"
	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/sandbox"
	"github.com/chargeflow/chargeflow/session"
	"github.com/chargeflow/chargeflow/store"
	boltstore "github.com/chargeflow/chargeflow/store/bolt"
)

func init() { commands["serve"] = runServe }

// runServe runs the service until ctx is done, then shuts down gracefully:
// HTTP first (no new work), then the demo and the simulated chargers, the
// broker link, the engine's workers, the sandbox, and the store last.
func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	// Every line names the instance (docs/contract.md §4: CHARGEFLOW_INSTANCE_ID is a log field).
	log := newLogger(cfg.LogFormat, stderr).With("instance", cfg.InstanceID)
	a := &app{cfg: cfg, log: log, stdout: stdout}
	defer a.close()
	if err := a.start(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-a.fatal:
		return err
	}
	log.Info("shutting down")
	return nil
}

func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// app is one running service; close undoes start in reverse order.
type app struct {
	cfg    *Config
	log    *slog.Logger
	stdout io.Writer
	fatal  chan error

	closers []func()
	wg      sync.WaitGroup
}

func (a *app) onClose(f func()) { a.closers = append(a.closers, f) }

func (a *app) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.wg.Wait()
}

func (a *app) start(ctx context.Context) error {
	cfg := a.cfg
	a.fatal = make(chan error, 4)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.onClose(cancel)

	// Store.
	st, err := openStore(ctx, cfg, a.log)
	if err != nil {
		return err
	}
	a.onClose(func() { st.Close() })
	if bs, ok := st.(*boltstore.Store); ok {
		a.startBackupSocket(cfg.DataDir, bs) // chargeflow backup, while serve holds the file (backup.go)
	}
	if err := ensureTariff(ctx, st); err != nil {
		return err
	}

	// HTTP listener first: in --dev a taken port moves, and the notify URL
	// of the sandbox must name the port in use.
	httpLn, err := listen(cfg.HTTPAddr, cfg.Dev, a.log, "CHARGEFLOW_HTTP_ADDR")
	if err != nil {
		return err
	}
	httpURL := "http://" + displayAddr(httpLn.Addr())
	publicURL := cfg.PublicURL
	if cfg.Dev && publicURL == "http://localhost:8080" {
		publicURL = httpURL
	}

	// Metrics: one registry per running service (GET /metrics).
	met := metrics.New()
	if err := met.WatchStore(st, 0, nil); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if err := met.WatchReconciliations(st, 0); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}

	// Pay Score.
	var payCfg payscore.Config
	var sb *sandbox.Sandbox
	if cfg.HuifuBaseURL == "" {
		sb, err = sandbox.New(sandbox.Options{AutoConfirm: 3 * time.Second, NotifyBackoff: time.Second, Logger: a.log.With("component", "sandbox"),
			StateFile: filepath.Join(cfg.DataDir, "payscore-sandbox.json")})
		if err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
		a.onClose(func() { sb.Close() })
		sbLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("sandbox listen: %w", err)
		}
		sbSrv := &http.Server{Handler: sb.Handler(), ReadHeaderTimeout: 10 * time.Second}
		a.wg.Add(1)
		go func() { defer a.wg.Done(); _ = sbSrv.Serve(sbLn) }()
		a.onClose(func() { sb.Close(); sbSrv.Close() })
		payCfg, err = sb.ClientConfig("http://" + sbLn.Addr().String())
		if err != nil {
			return err
		}
	} else if payCfg, err = huifuConfig(cfg); err != nil {
		return err
	}
	payCfg.NotifyURL = publicURL + "/notify/huifu/payscore"
	payCfg.Logger = a.log.With("component", "payscore")
	payCfg.Observer = met.PayScore()
	pay, err := payscore.New(payCfg)
	if err != nil {
		return fmt.Errorf("payscore: %w", err)
	}

	// Charger link and engine.
	var link charger.Link
	var broker *charger.EmbeddedBroker
	mqttURL := cfg.MQTTURL
	if cfg.MQTTURL != "" {
		clientTLS, err := charger.ClientTLSConfig(cfg.MQTTCAFile) // used for ssl:// and mqtts:// only
		if err != nil {
			return fmt.Errorf("CHARGEFLOW_MQTT_CA_FILE: %w", err)
		}
		pl, err := charger.NewPahoLink(charger.PahoConfig{URL: cfg.MQTTURL, Username: cfg.MQTTUsername, Password: cfg.MQTTPassword,
			ClientID: "chargeflow-" + cfg.InstanceID, Prefix: cfg.MQTTPrefix, ShareGroup: cfg.MQTTShareGroup, TLSConfig: clientTLS,
			Logger: a.log.With("component", "mqtt")})
		if err != nil {
			return fmt.Errorf("CHARGEFLOW_MQTT_URL: %w", err)
		}
		link = pl
	} else {
		listenAddr, err := freeAddr(cfg.MQTTListen, cfg.Dev, a.log, "CHARGEFLOW_MQTT_LISTEN")
		if err != nil {
			return err
		}
		bc := charger.EmbeddedConfig{ListenAddr: listenAddr, Prefix: cfg.MQTTPrefix,
			ServiceUsername: cfg.MQTTUsername, ServicePassword: cfg.MQTTPassword, Credentials: session.Credentials(st),
			StorePath: brokerStorePath(cfg), Logger: a.log.With("component", "broker")}
		if err := a.embeddedTLS(&bc); err != nil {
			return err
		}
		broker, err = charger.NewEmbeddedBroker(bc)
		if err != nil {
			return fmt.Errorf("CHARGEFLOW_MQTT_LISTEN: %w", err)
		}
		link = broker
	}
	a.onClose(func() { link.Close() })
	eng, err := session.New(session.Config{Machine: cfg.Machine, InstanceID: cfg.InstanceID, Webhooks: cfg.Webhooks.URL != ""}, st, pay, met.WrapCommander(link),
		a.log.With("component", "engine"), met, nil)
	if err != nil {
		return err
	}
	if broker != nil {
		// Nobody is connected to a broker that is just starting: presence
		// is known again as chargers reconnect.
		if err := eng.ResetPresence(ctx); err != nil {
			return fmt.Errorf("reset presence: %w", err)
		}
	}
	if err := link.Start(runCtx, met.WrapHandler(eng.HandleCharger)); err != nil {
		return fmt.Errorf("mqtt: %w", brokerConnectError(err))
	}
	if broker != nil {
		mqttURL = broker.URL() // known once it listens
	}
	a.wg.Add(1)
	go func() { defer a.wg.Done(); _ = eng.Run(runCtx) }()
	if err := a.startWebhooks(runCtx, cfg, st, met); err != nil {
		return err
	}
	if err := a.startReconcile(runCtx, st, pay, eng); err != nil {
		return err
	}

	// HTTP.
	handler := api.NewServer(api.Deps{Engine: eng, Store: st, Verifier: payCfg.Verifier,
		AppTokens: cfg.AppTokens, OperatorTokens: cfg.OperatorTokens, Logger: a.log.With("component", "http"),
		Ready: func(ctx context.Context) error { return ready(ctx, st, link) },
		Extra: map[string]http.Handler{
			"/metrics": met.Handler(), // unauthenticated, like /healthz: see docs/metrics.md

			// The operators' live board (api/board): the page and its files.
			"/":         board.Handler(),
			"/assets/*": board.Handler(),
		}})
	// Requests run on a context that shutdown cancels, so that event
	// streams (which never go idle) end at once instead of holding
	// Shutdown until its deadline.
	baseCtx, cancelBase := context.WithCancel(context.Background())
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
		BaseContext: func(net.Listener) context.Context { return baseCtx }}
	srv.RegisterOnShutdown(cancelBase)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := srv.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.fatal <- fmt.Errorf("http: %w", err)
		}
	}()
	a.onClose(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})

	if cfg.Dev {
		if err := a.startDev(runCtx, st, mqttURL, httpURL); err != nil {
			return err
		}
	}
	fmt.Fprintf(a.stdout, "chargeflow ready: http=%s mqtt=%s%s store=%s instance=%s\n", httpURL, mqttURL, tlsReady(broker), storeName(cfg), cfg.InstanceID)
	if cfg.Dev {
		fmt.Fprintf(a.stdout, "  live board:     %s/   (operator token: %s)\n", httpURL, devOperatorToken)
		fmt.Fprintf(a.stdout, "  API tokens:     app %q, operator %q\n", devAppToken, devOperatorToken)
		fmt.Fprintf(a.stdout, "  try:            curl -H 'Authorization: Bearer %s' %s/v1/sessions\n", devOperatorToken, httpURL)
		fmt.Fprintf(a.stdout, "  simulated chargers SIM-001…SIM-004 (connectors 1, 2) on %s; Pay Score sandbox confirms after 3s\n", mqttURL)
	}
	return nil
}

// ready is /readyz: the store answers and the broker link is connected.
// (The payment configuration was checked at start-up: keys load, URLs parse.)
func ready(ctx context.Context, st store.Store, link charger.Link) error {
	if err := st.Ping(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if r, ok := link.(interface{ Ready() error }); ok {
		if err := r.Ready(); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
	}
	return nil
}

func storeName(cfg *Config) string {
	if cfg.RedisURL != "" {
		return "redis"
	}
	return "bolt:" + cfg.DataDir
}

// ensureTariff stores the default tariff when there is none yet.
func ensureTariff(ctx context.Context, st store.Store) error {
	if _, err := st.GetTariff(ctx, "default"); errors.Is(err, store.ErrNotFound) {
		return st.PutTariff(ctx, money.DefaultTariff())
	} else if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// listen binds addr; in dev mode a taken port moves to the next free one
// (a newcomer may already run Mosquitto on 1883 or something on 8080).
func listen(addr string, dev bool, log *slog.Logger, env string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil || !dev {
		if err != nil {
			return nil, fmt.Errorf("%s: %w", env, err)
		}
		return ln, nil
	}
	host, portStr, perr := net.SplitHostPort(addr)
	port, aerr := strconv.Atoi(portStr)
	if perr != nil || aerr != nil || port == 0 {
		return nil, fmt.Errorf("%s: %w", env, err)
	}
	for p := port + 1; p < port+50 && p < 65536; p++ {
		if ln, err2 := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p))); err2 == nil {
			log.Warn("port taken, using the next free one", "setting", env, "wanted", addr, "using", ln.Addr().String())
			return ln, nil
		}
	}
	return nil, fmt.Errorf("%s: %w (and no free port after it)", env, err)
}

// freeAddr is listen for components that bind by themselves.
func freeAddr(addr string, dev bool, log *slog.Logger, env string) (string, error) {
	ln, err := listen(addr, dev, log, env)
	if err != nil {
		return "", err
	}
	got := ln.Addr().(*net.TCPAddr)
	ln.Close()
	host, _, _ := net.SplitHostPort(addr)
	return net.JoinHostPort(host, strconv.Itoa(got.Port)), nil
}

// displayAddr turns ":8080" into "localhost:8080" for URLs a person clicks.
func displayAddr(a net.Addr) string {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if t.IP.IsUnspecified() {
		return "localhost:" + strconv.Itoa(t.Port)
	}
	return t.String()
}

// Dev mode: simulated chargers and, optionally, the demo traffic.
var simChargers = []string{"SIM-001", "SIM-002", "SIM-003", "SIM-004"}

const simPassword = "sim-password"

func (a *app) startDev(ctx context.Context, st store.Store, mqttURL, httpURL string) error {
	hash, err := charger.HashPassword(simPassword)
	if err != nil {
		return err
	}
	specs := make([]sim.ChargerSpec, 0, len(simChargers))
	for _, id := range simChargers {
		c, err := st.GetCharger(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			c = store.Charger{ID: id, Connectors: []int{1, 2}, TariffID: "default", PasswordHash: hash, UpdatedAt: time.Now()}
			if err := st.PutCharger(ctx, c); err != nil {
				return fmt.Errorf("register %s: %w", id, err)
			}
		} else if err != nil {
			return err
		}
		specs = append(specs, sim.ChargerSpec{ID: id, Password: simPassword, Connectors: []int{1, 2}})
	}
	fleet, err := sim.New(sim.Config{BrokerURL: mqttURL, Prefix: a.cfg.MQTTPrefix, Chargers: specs, MeterInterval: 2 * time.Second,
		PowerW: 22_000, Logger: a.log.With("component", "sim"), StateDir: filepath.Join(a.cfg.DataDir, "sim")})
	if err != nil {
		return fmt.Errorf("simulated chargers: %w", err)
	}
	if err := fleet.Start(ctx); err != nil {
		return fmt.Errorf("simulated chargers: %w", err)
	}
	a.onClose(func() { fleet.Close() })
	// Cars are plugged in everywhere, so a session started through the API
	// (by the demo or by hand) can charge at once.
	for _, c := range fleet.Chargers() {
		_ = c.Plug(1)
		_ = c.Plug(2)
	}
	if a.cfg.DemoTraffic {
		d := &demo{fleet: fleet, base: httpURL, token: devAppToken, log: a.log.With("component", "demo")}
		a.wg.Add(1)
		go func() { defer a.wg.Done(); d.run(ctx) }()
	}
	return nil
}
