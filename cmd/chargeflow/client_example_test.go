package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestClientExampleReachesPaid builds the Go client's example program
// (client/example) and runs it, as a mini-program backend would run, against
// `chargeflow serve --dev` started in this process (demo traffic on, so some
// connectors are busy): it must take a session to paid. Every exchange goes
// through startDevServe's proxy, so each is checked against the OpenAPI
// document.
func TestClientExampleReachesPaid(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "example")
	if out, err := exec.Command("go", "build", "-o", bin, "../../client/example").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	base := startDevServe(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-url", base, "-token", devAppToken, "-charge-for", "2s", "-timeout", "90s").CombinedOutput()
	if err != nil {
		t.Fatalf("example: %v\n%s", err, out)
	}
	for _, want := range []string{"state charging", "energy flows", "stop asked", "paid: "} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the example's output has no %q:\n%s", want, out)
		}
	}
	t.Logf("example:\n%s", out)
}
