package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigWebhooks: off by default; a URL needs an http(s) URL and a
// secret, which may come from a file and never appears in a message.
func TestConfigWebhooks(t *testing.T) {
	c, err := loadConfig(nil, envOf(prodEnv()), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Webhooks.URL != "" || len(c.Webhooks.Retry) != 7 || c.Webhooks.Retry[6] != time.Hour {
		t.Fatalf("defaults %+v", c.Webhooks)
	}

	env := prodEnv()
	env["CHARGEFLOW_WEBHOOK_URL"] = "https://backend.example/hooks/chargeflow"
	_, err = loadConfig(nil, envOf(env), &bytes.Buffer{})
	if err == nil || strings.Count(err.Error(), "CHARGEFLOW_WEBHOOK_SECRET:") != 1 {
		t.Fatalf("a URL without a secret: %v", err)
	}

	path := filepath.Join(t.TempDir(), "webhook-secret")
	os.WriteFile(path, []byte("whsec-from-a-file-0123456789\n"), 0o600)
	env["CHARGEFLOW_WEBHOOK_SECRET_FILE"] = path
	env["CHARGEFLOW_WEBHOOK_RETRY"] = "1s, 2s"
	c, err = loadConfig(nil, envOf(env), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Webhooks.Secret != "whsec-from-a-file-0123456789" || len(c.Webhooks.Retry) != 2 || c.Webhooks.Retry[1] != 2*time.Second {
		t.Fatalf("from a file %+v", c.Webhooks.Retry)
	}

	env = prodEnv()
	env["CHARGEFLOW_WEBHOOK_URL"] = "ftp://backend.example/x"
	env["CHARGEFLOW_WEBHOOK_SECRET"] = "short-secret"
	env["CHARGEFLOW_WEBHOOK_RETRY"] = "1s,later"
	_, err = loadConfig(nil, envOf(env), &bytes.Buffer{})
	if err == nil {
		t.Fatal("bad webhook settings accepted")
	}
	for _, v := range []string{"CHARGEFLOW_WEBHOOK_URL:", "CHARGEFLOW_WEBHOOK_SECRET:", "CHARGEFLOW_WEBHOOK_RETRY:"} {
		if strings.Count(err.Error(), v) != 1 {
			t.Errorf("%s not named once in %v", v, err)
		}
	}
	if strings.Contains(err.Error(), "short-secret") {
		t.Errorf("the secret leaked: %v", err)
	}
}
