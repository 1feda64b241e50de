package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

// probeSandbox serves a sandbox and writes the config file `sandbox
// credentials` prints for it; edit changes lines before the file is written.
func probeSandbox(t *testing.T, opts sandbox.Options, edit func(lines string) string) (string, *sandbox.Sandbox) {
	t.Helper()
	sb, err := sandbox.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb.Handler())
	t.Cleanup(func() { sb.Close(); srv.Close() })
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"sandbox", "credentials", "--base-url", srv.URL}, func(string) string { return "" }, &out, &errb); err != nil {
		t.Fatalf("sandbox credentials: %v %s", err, errb.String())
	}
	lines := out.String()
	for _, k := range []string{"CHARGEFLOW_HUIFU_BASE_URL=" + srv.URL, "CHARGEFLOW_HUIFU_PRIVATE_KEY=", "CHARGEFLOW_HUIFU_PUBLIC_KEY=", "CHARGEFLOW_PAYSCORE_SERVICE_ID="} {
		if !strings.Contains(lines, k) {
			t.Fatalf("credentials lack %s:\n%s", k, lines)
		}
	}
	if edit != nil {
		lines = edit(lines)
	}
	file := filepath.Join(t.TempDir(), "chargeflow.env")
	if err := os.WriteFile(file, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	return file, sb
}

func payscoreCheck(t *testing.T, file string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"payscore", "check", "--config", file}, func(string) string { return "" }, &out, &errb)
	return out.String() + errb.String(), err
}

// TestPayScoreCheck: the go-live probe from the command line against the
// sandbox (docs/contract.md §5): every step passes and the order ends cancelled;
// a sandbox that does not own the configured service id fails create and
// says why; a sandbox holding another key fails on the signature.
func TestPayScoreCheck(t *testing.T) {
	t.Run("passes", func(t *testing.T) {
		file, sb := probeSandbox(t, sandbox.Options{ServiceID: "svc-ours"}, nil) // credentials carry svc-ours
		out, err := payscoreCheck(t, file)
		t.Log(out)
		if err != nil || strings.Count(out, "  PASS") != 3 || !strings.Contains(out, "every step passed") || strings.Contains(out, "PRIVATE") {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, want := range []string{"step 1 create", `"service_id":"svc-ours"`, "signature: verified", "field risk_fund", "step 3 cancel", "complete_time"} {
			if !strings.Contains(out, want) {
				t.Fatalf("output lacks %q:\n%s", want, out)
			}
		}
		orders := sb.Orders()
		if o, _ := sb.Order(orders[0]); len(orders) != 1 || o.State != "REVOKED" || o.RiskFund != 1 {
			t.Fatalf("sandbox orders %v %+v", orders, o)
		}
	})
	t.Run("unknown service id", func(t *testing.T) {
		file, _ := probeSandbox(t, sandbox.Options{ServiceID: "svc-theirs"}, func(l string) string {
			return strings.Replace(l, "CHARGEFLOW_PAYSCORE_SERVICE_ID=svc-theirs", "CHARGEFLOW_PAYSCORE_SERVICE_ID=svc-ours", 1)
		})
		out, err := payscoreCheck(t, file)
		t.Log(out)
		if err == nil || !strings.Contains(out, "FAIL: create") || !strings.Contains(out, "field service_id (the configured CHARGEFLOW_PAYSCORE_SERVICE_ID): REFUSED") ||
			!strings.Contains(out, "step 2 query: skipped") {
			t.Fatalf("%v\n%s", err, out)
		}
	})
	t.Run("another key", func(t *testing.T) {
		other, err := sandbox.New(sandbox.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		file, _ := probeSandbox(t, sandbox.Options{}, func(l string) string {
			var b strings.Builder
			for _, line := range strings.Split(l, "\n") {
				if strings.HasPrefix(line, "CHARGEFLOW_HUIFU_PUBLIC_KEY=") {
					line = "CHARGEFLOW_HUIFU_PUBLIC_KEY=" + other.PublicKey()
				}
				b.WriteString(line + "\n")
			}
			return b.String()
		})
		out, err := payscoreCheck(t, file)
		t.Log(out)
		if err == nil || !strings.Contains(out, "FAIL: create") || !strings.Contains(out, "signature: NOT verified: it does not match CHARGEFLOW_HUIFU_PUBLIC_KEY") {
			t.Fatalf("%v\n%s", err, out)
		}
	})
}

// TestSandboxCredentialsFromStateFile: the lines come from a state file
// without touching it.
func TestSandboxCredentialsFromStateFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sandbox.json")
	sb, err := sandbox.New(sandbox.Options{StateFile: file})
	if err != nil {
		t.Fatal(err)
	}
	sb.Close()
	before, _ := os.ReadFile(file)
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"sandbox", "credentials", "--state-file", file, "--base-url", "http://sb.example:8090"}, func(string) string { return "" }, &out, &errb); err != nil {
		t.Fatalf("%v %s", err, errb.String())
	}
	after, _ := os.ReadFile(file)
	if !strings.Contains(out.String(), "CHARGEFLOW_HUIFU_PRIVATE_KEY="+sb.MerchantPrivateKey()) || !strings.Contains(out.String(), "CHARGEFLOW_HUIFU_PUBLIC_KEY="+sb.PublicKey()) ||
		!strings.Contains(out.String(), "CHARGEFLOW_HUIFU_BASE_URL=http://sb.example:8090") || !bytes.Equal(before, after) {
		t.Fatalf("%s", out.String())
	}
}
