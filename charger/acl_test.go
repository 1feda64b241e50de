package charger_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/internal/testenv"
)

// TestEmbeddedACL drives the embedded broker with raw paho clients: our
// auth hook and ACL hook, filters with wildcards and $share included.
func TestEmbeddedACL(t *testing.T) {
	c := &creds{}
	c.add(t, "A", "pa")
	c.add(t, "B", "pb")
	rec := &recorder{}
	b, err := charger.NewEmbeddedBroker(charger.EmbeddedConfig{ListenAddr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		Credentials: c, ServiceUsername: serviceUser, ServicePassword: servicePass})
	if err != nil {
		t.Fatal(err)
	}
	startLink(t, b, rec.handle)
	url := b.URL()

	t.Run("auth", func(t *testing.T) {
		refused := []struct{ name, id, user, pw string }{
			{"wrong password", "A", "A", "pb"},
			{"unknown charger", "Z", "Z", "pa"},
			{"client id is not the username", "B", "A", "pa"},
			{"no credentials", "A", "", ""},
			{"wrong service password", "svc", serviceUser, "nope"},
		}
		for _, r := range refused {
			if _, err := rawClient(t, url, r.id, r.user, r.pw, true); err == nil {
				t.Errorf("%s: accepted", r.name)
			}
		}
		// A will on someone else's topic is refused at connect.
		o := paho.NewClientOptions().AddBroker(url).SetClientID("A").SetUsername("A").SetPassword("pa").
			SetWill("ev/v1/B/state", `{"online":false,"reason":"lwt"}`, 1, true).SetAutoReconnect(false)
		cl := paho.NewClient(o)
		if tok := cl.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
			cl.Disconnect(0)
			t.Error("will on another charger's topic accepted")
		}
	})

	svc, err := rawClient(t, url, "chargeflow-svc", serviceUser, servicePass, true)
	if err != nil {
		t.Fatal(err)
	}
	a, err := rawClient(t, url, "A", "A", "pa", true)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("subscribe filters", func(t *testing.T) {
		cases := []struct {
			c      paho.Client
			filter string
			ok     bool
		}{
			{a, "ev/v1/A/down/#", true},
			{a, "ev/v1/A/down/cmd", true},
			{a, "ev/v1/A/down/+", true},
			{a, "ev/v1/A/down", true},
			{a, "ev/v1/#", false},
			{a, "#", false},
			{a, "ev/v1/+/down/#", false},
			{a, "ev/v1/+/down/cmd", false},
			{a, "ev/v1/A/#", false},
			{a, "ev/v1/A/+/cmd", false},
			{a, "ev/v1/A", false}, // a literal filter is not a prefix
			{a, "ev/v1/Ax/down/#", false},
			{a, "ev/v1/B/down/#", false},
			{a, "ev/v1/A/up/#", false},
			{a, "$share/g/ev/v1/A/down/#", false},
			{a, "$share/g/ev/v1/#", false},
			{a, "$SYS/#", false},
			{svc, "ev/v1/#", true},
			{svc, "ev/v1/+/up/#", true},
			{svc, "$share/g/ev/v1/+/up/#", true},
			{svc, "#", false},
			{svc, "other/#", false},
		}
		for _, c := range cases {
			tok := c.c.Subscribe(c.filter, 1, func(paho.Client, paho.Message) {})
			if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("subscribe %s: %v", c.filter, tok.Error())
			}
			key := c.filter // paho files results of $share/<g>/f under f
			if rest, ok := strings.CutPrefix(key, "$share/"); ok {
				_, key, _ = strings.Cut(rest, "/")
			}
			code, ok := tok.(*paho.SubscribeToken).Result()[key]
			if !ok {
				t.Fatalf("no SUBACK result for %s", c.filter)
			}
			if (code <= 2) != c.ok {
				t.Errorf("subscribe %q: code %#x, want allowed=%v", c.filter, code, c.ok)
			}
		}
	})

	t.Run("publish", func(t *testing.T) {
		var mu sync.Mutex
		var seen []string
		tok := svc.Subscribe("ev/v1/#", 1, func(_ paho.Client, m paho.Message) {
			mu.Lock()
			seen = append(seen, m.Topic())
			mu.Unlock()
		})
		tok.WaitTimeout(5 * time.Second)
		// A publishing on B's topic: denied; an MQTT 3.1.1 client is disconnected.
		evil, err := rawClient(t, url, "A", "A", "pa", true)
		if err != nil {
			t.Fatal(err)
		}
		evil.Publish("ev/v1/B/up/txn", 1, false, []byte(`{}`)).WaitTimeout(time.Second)
		eventually(t, "offender disconnected", func() bool { return !evil.IsConnectionOpen() })
		a2, err := rawClient(t, url, "A", "A", "pa", true)
		if err != nil {
			t.Fatal(err)
		}
		for _, denied := range []string{"ev/v1/B/state", "ev/v1/A/down/cmd"} {
			a2.Publish(denied, 0, false, []byte(`{}`)).WaitTimeout(time.Second) // QoS 0: dropped silently
		}
		mustPublish(t, a2, "ev/v1/A/up/meter", []byte(`{}`))
		eventually(t, "own message", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(seen) > 0
		})
		mu.Lock()
		if len(seen) != 1 || seen[0] != "ev/v1/A/up/meter" {
			t.Errorf("service saw %v, want only ev/v1/A/up/meter", seen)
		}
		mu.Unlock()
		for _, m := range rec.all {
			if m.ChargerID != "A" {
				t.Errorf("handler got %s from A's connection", m.Topic)
			}
		}
		// The service account reaches A's down topic; B's message does not reach A.
		var got []string
		a2.Subscribe("ev/v1/A/down/#", 1, func(_ paho.Client, m paho.Message) {
			mu.Lock()
			got = append(got, m.Topic())
			mu.Unlock()
		}).WaitTimeout(5 * time.Second)
		mustPublish(t, svc, "ev/v1/B/down/cmd", []byte(`{}`))
		if err := b.SendCommand(context.Background(), "A", charger.Command{CmdID: "c", Type: charger.CmdStop, SessionID: "s"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "command to A", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 })
		mu.Lock()
		if len(got) != 1 || got[0] != "ev/v1/A/down/cmd" {
			t.Errorf("A got %v", got)
		}
		mu.Unlock()
	})
}
