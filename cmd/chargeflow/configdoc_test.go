package main

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var updateConfigDoc = flag.Bool("update-config-doc", false, "rewrite docs/deploy.md's configuration reference from the configuration table")

// TestConfigReference fails when docs/deploy.md's configuration reference is
// not what the configuration table renders. Run
// `go test ./cmd/chargeflow -run TestConfigReference -update-config-doc`.
func TestConfigReference(t *testing.T) {
	const path = "../../docs/deploy.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, configRefBegin), strings.Index(doc, configRefEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers %q … %q", path, configRefBegin, configRefEnd)
	}
	got := doc[i : j+len(configRefEnd)+1]
	want := configReference()
	if *updateConfigDoc && got != want {
		doc = doc[:i] + want + doc[j+len(configRefEnd)+1:]
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		got = want
	}
	if got != want {
		t.Fatalf("%s's configuration reference is out of date: run `go test ./cmd/chargeflow -run TestConfigReference -update-config-doc`", path)
	}
	req := requiredSettings()
	for _, env := range []string{"CHARGEFLOW_HUIFU_BASE_URL", "CHARGEFLOW_HUIFU_PRIVATE_KEY", "CHARGEFLOW_APP_TOKENS", "CHARGEFLOW_OPERATOR_TOKENS"} {
		if !req[env] {
			t.Errorf("%s is not found required without --dev", env)
		}
	}
	if req["CHARGEFLOW_REDIS_URL"] || req["CHARGEFLOW_MQTT_URL"] {
		t.Error("the embedded store and broker need no URL, yet a URL is found required")
	}
}
