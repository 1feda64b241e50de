package charger_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/internal/testenv"
)

// TestDeployMosquitto starts Mosquitto with deploy/mosquitto's settings and
// ACL, and a password file made of charger.HashPassword hashes.
func TestDeployMosquitto(t *testing.T) {
	// Mosquitto started as root drops to the "mosquitto" user before it
	// reads these files: they must be readable by others (t.TempDir is not).
	dir, err := os.MkdirTemp("", "chargeflow-mosquitto-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var pw strings.Builder
	for user, pass := range map[string]string{"chargeflow": "svc", "CP1": "pw1", "CP2": "pw2"} {
		h, err := charger.HashPassword(pass)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&pw, "%s:%s\n", user, h)
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(pw.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	acl := readFile(t, "../deploy/mosquitto/acl")
	if err := os.WriteFile(filepath.Join(dir, "acl"), []byte(acl), 0o644); err != nil {
		t.Fatal(err)
	}
	// The deploy config minus what only makes sense in the container
	// (listeners, certificates, paths), with our files.
	var conf strings.Builder
	for _, line := range strings.Split(readFile(t, "../deploy/mosquitto/mosquitto.conf"), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "listener", "certfile", "keyfile", "persistence_location", "per_listener_settings":
			continue
		case "password_file":
			line = "password_file " + filepath.Join(dir, "passwd")
		case "acl_file":
			line = "acl_file " + filepath.Join(dir, "acl")
		}
		conf.WriteString(line + "\n")
	}
	mq := testenv.MosquittoProcess(t, conf.String())
	url := mq.URL

	// Credentials.
	if _, err := rawClient(t, url, "CP1", "CP1", "wrong", true); err == nil {
		t.Fatal("wrong password accepted")
	}
	if _, err := rawClient(t, url, "CP9", "CP9", "pw1", true); err == nil {
		t.Fatal("unknown charger accepted")
	}
	if _, err := rawClient(t, url, "anon", "", "", true); err == nil {
		t.Fatal("anonymous client accepted")
	}
	svc, err := rawClient(t, url, "chargeflow-test", "chargeflow", "svc", true)
	if err != nil {
		t.Fatalf("service account: %v\n%s", err, mq.Log())
	}
	cp1, err := rawClient(t, url, "CP1", "CP1", "pw1", true)
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	got := map[string][]string{}
	collect := func(who string) paho.MessageHandler {
		return func(_ paho.Client, m paho.Message) {
			mu.Lock()
			got[who] = append(got[who], m.Topic())
			mu.Unlock()
		}
	}
	received := func(who, topic string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, tp := range got[who] {
			if tp == topic {
				return true
			}
		}
		return false
	}
	sub := func(c paho.Client, filter, who string) {
		tok := c.Subscribe(filter, 1, collect(who))
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", filter, tok.Error())
		}
	}
	sub(svc, "ev/v1/#", "svc")
	sub(svc, "$share/g/ev/v1/+/up/#", "svc-shared")
	// A charger asking for too much: Mosquitto may grant the SUBACK but
	// never delivers what the ACL forbids.
	sub(cp1, "ev/v1/#", "cp1")
	sub(cp1, "ev/v1/+/down/#", "cp1")
	sub(cp1, "ev/v1/CP1/down/#", "cp1")

	// CP1 on CP2's topics is dropped; on its own it goes through.
	mustPublish(t, cp1, "ev/v1/CP2/up/meter", []byte(`{}`))
	mustPublish(t, cp1, "ev/v1/CP2/state", []byte(`{}`))
	mustPublish(t, cp1, "ev/v1/CP1/down/cmd", []byte(`{}`))
	mustPublish(t, cp1, "ev/v1/CP1/up/meter", []byte(`{}`))
	eventually(t, "own up message", func() bool {
		return received("svc", "ev/v1/CP1/up/meter") && received("svc-shared", "ev/v1/CP1/up/meter")
	})
	for _, denied := range []string{"ev/v1/CP2/up/meter", "ev/v1/CP2/state", "ev/v1/CP1/down/cmd"} {
		if received("svc", denied) {
			t.Errorf("charger CP1 could publish on %s", denied)
		}
	}
	// The service commands both chargers; CP1 gets only its own.
	mustPublish(t, svc, "ev/v1/CP2/down/cmd", []byte(`{}`))
	mustPublish(t, svc, "ev/v1/CP1/down/cmd", []byte(`{}`))
	eventually(t, "own command", func() bool { return received("cp1", "ev/v1/CP1/down/cmd") })
	if received("cp1", "ev/v1/CP2/down/cmd") || received("cp1", "ev/v1/CP1/up/meter") {
		mu.Lock()
		t.Errorf("charger CP1 read beyond its down topics: %v", got["cp1"])
		mu.Unlock()
	}
}
