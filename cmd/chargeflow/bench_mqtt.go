package main

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/chargeflow/chargeflow/charger"
)

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
	o := paho.NewClientOptions().SetStore(charger.NewPahoStore()).AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pass).
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
	b.emitMQTTEmbeddedStore(ctx) // the broker's state kept on disk (bench_mqtt_store.go)
	b.emitMQTTBurst(ctx)
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
	defer dropPersistentSession(b, brokerURL, linkID, user, pass)
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
