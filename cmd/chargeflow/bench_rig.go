package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

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

// rigOptions shape an engineRig: its fleet, and on which stack it runs.
type rigOptions struct {
	chargers      int           // simulated chargers, each registered with a password
	connectors    int           // connectors 1…connectors on each
	meterInterval time.Duration // the chargers' meter period
	startTimeout  time.Duration // the machine's start timeout; 0: the default
	// redisURL and mqttURL, both set, run the rig on the Redis store (under
	// the run's key prefix) and an external broker through PahoLink (under
	// the run's topic prefix); both empty, on bbolt and the embedded broker.
	redisURL, mqttURL string
	// onCommand is called with every command a simulated charger receives.
	onCommand func(chargerID string, cmd charger.Command)
}

// stack names the rig's store and broker in row names.
func (o rigOptions) stack() string {
	if o.redisURL != "" {
		return "redis+mosquitto"
	}
	return "embedded"
}

// benchLink is what the engine needs of a broker: the embedded broker or
// PahoLink.
type benchLink interface {
	session.Commander
	Start(ctx context.Context, h charger.Handler) error
	Close() error
}

// engineRig is the real engine with a store (bbolt, or Redis), a broker
// (embedded, or an external one through PahoLink), simulated chargers and
// the Pay Score sandbox over loopback HTTP.
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

	// The broker as an MQTT client sees it: URL, an account that may
	// publish and subscribe under the topic prefix, and the prefix.
	mqttURL, mqttUser, mqttPass string
	topics                      charger.Topics
	specs                       []sim.ChargerSpec // the fleet
}

func (r *engineRig) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

func (r *engineRig) onClose(f func()) { r.closers = append(r.closers, f) }

const benchSimPassword = "bench-charger-password"

// openStore opens the rig's store: bbolt in a temp dir, or Redis under a
// key prefix of this run that is removed at the end.
func (r *engineRig) openStore(ctx context.Context, o rigOptions) error {
	if o.redisURL != "" {
		prefix := r.b.runID + "e"
		st, err := redisstore.New(ctx, o.redisURL, redisstore.Options{Prefix: prefix, Logger: r.b.log})
		if err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		r.st = st
		r.onClose(func() {
			if err := deleteRedisPrefix(context.Background(), st, prefix); err != nil {
				fmt.Fprintf(r.b.stderr, "chargeflow bench: could not remove Redis keys %s:*: %v\n", prefix, err)
			}
			st.Close()
		})
		return nil
	}
	dir, err := os.MkdirTemp("", "chargeflow-bench-")
	if err != nil {
		return err
	}
	r.onClose(func() { os.RemoveAll(dir) })
	st, err := boltstore.Open(dir, boltstore.Options{Logger: r.b.log})
	if err != nil {
		return err
	}
	r.st = st
	r.onClose(func() { st.Close() })
	return nil
}

// openLink returns the rig's broker, not started: the embedded one with a
// service account for the bench's own clients, or PahoLink to o.mqttURL.
func (r *engineRig) openLink(o rigOptions) (benchLink, error) {
	if o.mqttURL == "" {
		r.mqttUser, r.mqttPass = "chargeflow-bench", r.b.runID+"-service"
		broker, err := charger.NewEmbeddedBroker(charger.EmbeddedConfig{ListenAddr: "127.0.0.1:0",
			Credentials: session.Credentials(r.st), ServiceUsername: r.mqttUser, ServicePassword: r.mqttPass, Logger: r.b.brokerLog})
		if err != nil {
			return nil, err
		}
		return broker, nil // r.mqttURL once it listens
	}
	u, err := url.Parse(o.mqttURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--mqtt: not a broker URL: %q", o.mqttURL)
	}
	if u.User != nil {
		r.mqttUser = u.User.Username()
		r.mqttPass, _ = u.User.Password()
		u.User = nil
	}
	r.mqttURL = u.String()
	r.topics = charger.Topics{Prefix: r.b.runID + "/ev/v1"}
	linkID := r.b.runID + "-enginelink"
	link, err := charger.NewPahoLink(charger.PahoConfig{URL: r.mqttURL, Username: r.mqttUser, Password: r.mqttPass,
		ClientID: linkID, Prefix: r.topics.Prefix, Logger: r.b.log})
	if err != nil {
		return nil, err
	}
	r.onClose(func() { dropPersistentSession(r.b, r.mqttURL, linkID, r.mqttUser, r.mqttPass) })
	r.onClose(r.clearRetained) // after the fleet and the link stopped
	return link, nil
}

// dropPersistentSession connects once more with a clean session as id, which
// makes the broker drop the persistent session a link kept there.
func dropPersistentSession(b *bench, brokerURL, id, user, pass string) {
	if c, err := benchPaho(brokerURL, id, user, pass); err == nil {
		c.Disconnect(100)
	} else {
		fmt.Fprintf(b.stderr, "chargeflow bench: could not remove the persistent session %s: %v\n", id, err)
	}
}

func newEngineRig(ctx context.Context, b *bench, o rigOptions) (_ *engineRig, err error) {
	r := &engineRig{b: b, watch: newFeedWatch(), obs: &benchObserver{}}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	r.tr = &http.Transport{MaxIdleConnsPerHost: 4 * min(o.chargers*o.connectors, 256), IdleConnTimeout: 30 * time.Second}
	r.onClose(r.tr.CloseIdleConnections)

	if err := r.openStore(ctx, o); err != nil {
		return nil, err
	}
	st := r.st
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

	link, err := r.openLink(o)
	if err != nil {
		return nil, err
	}
	mcfg := fsm.DefaultConfig()
	mcfg.PollInterval = 2 * time.Second // a lost notification costs the run 2 s, not 30
	if o.startTimeout > 0 {
		mcfg.StartTimeout = o.startTimeout
	}
	e, err := session.New(session.Config{Machine: mcfg, InstanceID: b.runID}, st, pay, link, b.log, r.obs, nil)
	if err != nil {
		return nil, err
	}
	r.eng = e
	eng.Store(e)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if err := link.Start(runCtx, e.HandleCharger); err != nil {
		cancel()
		return nil, err
	}
	var wg sync.WaitGroup
	r.onClose(func() { cancel(); wg.Wait() }) // workers and the feed watcher, after the broker
	r.onClose(func() { link.Close() })
	if eb, ok := link.(*charger.EmbeddedBroker); ok {
		r.mqttURL = eb.URL()
	}
	after, err := st.LatestChangeID(ctx)
	if err != nil {
		return nil, err
	}
	wg.Go(func() { r.watch.run(runCtx, st, after) })
	wg.Go(func() { _ = e.Run(runCtx) })

	connectors := make([]int, o.connectors)
	for i := range connectors {
		connectors[i] = i + 1
	}
	// On an external broker the charger ids (the chargers' client ids) are
	// the run's and this rig's own.
	b.rigs++
	idFormat := "BENCH-%05d"
	if o.mqttURL != "" {
		idFormat = fmt.Sprintf("%s-%d-%%05d", b.runID, b.rigs)
	}
	specs := make([]sim.ChargerSpec, o.chargers)
	r.specs = specs
	for i := range specs {
		id := fmt.Sprintf(idFormat, i+1)
		if _, err := e.PutCharger(ctx, id, session.ChargerRequest{Connectors: connectors, TariffID: "default", Password: benchSimPassword}); err != nil {
			return nil, fmt.Errorf("register %s: %w", id, err)
		}
		specs[i] = sim.ChargerSpec{ID: id, Password: benchSimPassword, Connectors: connectors}
	}
	// On an external broker the chargers connect as their ids with their
	// passwords, which a broker allowing anonymous clients accepts.
	// At 720 kW a sample carries energy enough to cost a few fen in every
	// tariff period, so a session can stop after its first sample.
	scfg := sim.Config{BrokerURL: r.mqttURL, Prefix: r.topics.Prefix, Chargers: specs, MeterInterval: o.meterInterval,
		PowerW: 720_000, TxnResend: 500 * time.Millisecond, Logger: b.log, OnCommand: o.onCommand}
	fleet, err := sim.New(scfg)
	if err != nil {
		return nil, err
	}
	r.fleet = fleet
	if err := fleet.Start(ctx); err != nil {
		fleet.Close()
		return nil, fmt.Errorf("simulated chargers: %w", err)
	}
	r.onClose(func() { fleet.Close(); r.awaitOffline() }) // before the broker stops
	wait := 20*time.Second + time.Duration(o.chargers)*20*time.Millisecond
	deadline := time.Now().Add(wait)
	for _, sp := range specs {
		for {
			c, err := st.GetCharger(ctx, sp.ID)
			if err == nil && c.Online {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("charger %s not online after %s", sp.ID, wait)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return r, nil
}

// clearRetained removes the chargers' retained state messages from an
// external broker: the bench leaves nothing retained there.
func (r *engineRig) clearRetained() {
	if len(r.specs) == 0 {
		return
	}
	c, err := benchPaho(r.mqttURL, r.b.runID+"-clear", r.mqttUser, r.mqttPass)
	if err != nil {
		fmt.Fprintf(r.b.stderr, "chargeflow bench: could not remove the retained charger states: %v\n", err)
		return
	}
	defer c.Disconnect(100)
	var last paho.Token
	for _, sp := range r.specs {
		last = c.Publish(r.topics.State(sp.ID), 1, true, []byte{})
	}
	if last != nil && (!last.WaitTimeout(10*time.Second) || last.Error() != nil) {
		fmt.Fprintf(r.b.stderr, "chargeflow bench: could not remove the retained charger states: %v\n", last.Error())
	}
}

// awaitOffline waits (5 s at most) until the engine has stored every charger
// of the stopped fleet offline, so that the link stops with nothing in hand.
func (r *engineRig) awaitOffline() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, sp := range r.specs {
		for ctx.Err() == nil {
			if c, err := r.st.GetCharger(ctx, sp.ID); err != nil || !c.Online {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
