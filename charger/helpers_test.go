package charger_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/internal/testenv"
)

// creds is an in-memory charger registry.
type creds struct {
	mu sync.Mutex
	m  map[string]string // id → hash
}

func (c *creds) ChargerPasswordHash(_ context.Context, id string) (string, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.m[id]
	return h, ok, nil
}

func (c *creds) add(t testing.TB, id, pw string) {
	t.Helper()
	h, err := charger.HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]string{}
	}
	c.m[id] = h
}

// recorder is a Handler that keeps what it was given, per charger, and can
// be told to fail.
type recorder struct {
	mu   sync.Mutex
	all  []charger.Inbound
	fail func(charger.Inbound) error // may be nil
}

func (r *recorder) handle(_ context.Context, m charger.Inbound) error {
	r.mu.Lock()
	fail := r.fail
	r.mu.Unlock()
	if fail != nil {
		if err := fail(m); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.all = append(r.all, m)
	r.mu.Unlock()
	return nil
}

func (r *recorder) setFail(f func(charger.Inbound) error) {
	r.mu.Lock()
	r.fail = f
	r.mu.Unlock()
}

// decoded returns the decoded messages of one charger and kind, in arrival order.
func (r *recorder) decoded(cp string, k charger.Kind) []charger.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []charger.Message
	for _, m := range r.all {
		if m.ChargerID == cp && m.Kind == k {
			if d, err := charger.Decode(k, m.Payload); err == nil {
				out = append(out, d)
			}
		}
	}
	return out
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.all)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// broker is one of the two broker set-ups the shared scenarios run on.
type broker struct {
	name    string
	url     string                                     // where chargers connect
	prefix  string                                     // topic prefix for this test
	creds   *creds                                     // for the embedded broker; nil for Mosquitto
	newLink func(t testing.TB, id string) charger.Link // a link; the same id resumes the same session
	// restartable: stop and start the link under test with the same identity.
}

const (
	serviceUser = "chargeflow"
	servicePass = "service-secret"
)

func mosquittoBroker(t testing.TB) *broker {
	url := os.Getenv(testenv.EnvMQTTURL)
	if url == "" {
		// See deploy/mosquitto/mosquitto.conf: Mosquitto 2.0 reorders a
		// client's QoS 1 messages once its inflight window is full, and
		// chargeflow acknowledges only after storing, so the window must not
		// be the limit.
		url = testenv.MosquittoProcess(t, "max_inflight_messages 0").URL
	}
	prefix := testenv.Namespace(t) + "/ev/v1"
	return &broker{name: "mosquitto", url: url, prefix: prefix,
		newLink: func(t testing.TB, id string) charger.Link {
			l, err := charger.NewPahoLink(charger.PahoConfig{URL: url, ClientID: "chargeflow-" + id + "-" + prefix[:9],
				Prefix: prefix, RetryMin: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			return l
		}}
}

func embeddedBroker(t testing.TB) *broker {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	c := &creds{}
	return &broker{name: "embedded", url: "tcp://" + addr, prefix: charger.DefaultPrefix, creds: c,
		newLink: func(t testing.TB, _ string) charger.Link {
			b, err := charger.NewEmbeddedBroker(charger.EmbeddedConfig{ListenAddr: addr, Credentials: c,
				ServiceUsername: serviceUser, ServicePassword: servicePass})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}}
}

func brokers() map[string]func(testing.TB) *broker {
	return map[string]func(testing.TB) *broker{"mosquitto": mosquittoBroker, "embedded": embeddedBroker}
}

// register makes a charger known (embedded broker) and returns its password.
func (b *broker) register(t testing.TB, id string) string {
	pw := "pw-" + id
	if b.creds != nil {
		b.creds.add(t, id, pw)
	}
	return pw
}

// startLink starts a link with h and closes it at the end of the test.
func startLink(t testing.TB, l charger.Link, h charger.Handler) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := l.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
}

// rawClient connects a plain paho client (a charger or the service account).
func rawClient(t testing.TB, url, id, user, pw string, clean bool) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pw).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetStore(paho.NewOrderedMemoryStore())
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func mustPublish(t testing.TB, c paho.Client, topic string, payload []byte) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
