package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// prodEnv is a complete production configuration.
func prodEnv() map[string]string {
	return map[string]string{
		"CHARGEFLOW_HUIFU_BASE_URL":      "https://spin-test.cloudpnr.com",
		"CHARGEFLOW_HUIFU_SYS_ID":        "6666000100000000",
		"CHARGEFLOW_HUIFU_PRODUCT_ID":    "PAYUN",
		"CHARGEFLOW_HUIFU_MERCHANT_ID":   "6666000100000001",
		"CHARGEFLOW_HUIFU_PRIVATE_KEY":   "MIIEvQ-not-a-real-key",
		"CHARGEFLOW_HUIFU_PUBLIC_KEY":    "MIIBIj-not-a-real-key",
		"CHARGEFLOW_PAYSCORE_SERVICE_ID": "svc",
		"CHARGEFLOW_APP_TOKENS":          "miniapp:app-secret-1",
		"CHARGEFLOW_OPERATOR_TOKENS":     "alice:ops-secret-1,bob:ops-secret-2",
	}
}

func TestConfigDefaultsAndPrecedence(t *testing.T) {
	env := prodEnv()
	env["CHARGEFLOW_STOP_TIMEOUT"] = "90s"
	env["CHARGEFLOW_HTTP_ADDR"] = ":9000"
	file := filepath.Join(t.TempDir(), "chargeflow.conf")
	os.WriteFile(file, []byte("# a comment\nCHARGEFLOW_HTTP_ADDR=:7000\nCHARGEFLOW_MQTT_PREFIX=\"fleet/v1\"\nCHARGEFLOW_START_TIMEOUT=30s\n"), 0o600)
	c, err := loadConfig([]string{"--config", file, "--start-timeout", "45s"}, envOf(env), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != ":9000" { // env beats the file
		t.Errorf("http addr %q", c.HTTPAddr)
	}
	if c.MQTTPrefix != "fleet/v1" { // the file beats the default
		t.Errorf("prefix %q", c.MQTTPrefix)
	}
	if c.Machine.StartTimeout != 45*time.Second { // the flag beats the file
		t.Errorf("start timeout %s", c.Machine.StartTimeout)
	}
	if c.Machine.StopTimeout != 90*time.Second || c.Machine.ConfirmTimeout != 5*time.Minute || c.Machine.OfflineGrace != 10*time.Minute ||
		c.Machine.PollInterval != 30*time.Second || len(c.Machine.DebitRetry) != 6 || c.Machine.DebitRetry[5] != 24*time.Hour {
		t.Errorf("timers %+v", c.Machine)
	}
	if c.DataDir != "./data" || c.LogFormat != "text" || c.PublicURL != "http://localhost:8080" || c.MQTTListen != ":1883" {
		t.Errorf("defaults %+v", c)
	}
	if c.OperatorTokens["ops-secret-2"] != "bob" || c.AppTokens["app-secret-1"] != "miniapp" {
		t.Errorf("tokens %v %v", c.AppTokens, c.OperatorTokens)
	}
}

func TestConfigSecretsFromFiles(t *testing.T) {
	env := prodEnv()
	delete(env, "CHARGEFLOW_HUIFU_PRIVATE_KEY")
	path := filepath.Join(t.TempDir(), "key")
	os.WriteFile(path, []byte("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n"), 0o600)
	env["CHARGEFLOW_HUIFU_PRIVATE_KEY_FILE"] = path
	c, err := loadConfig(nil, envOf(env), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.HuifuPrivateKey, "-----BEGIN PRIVATE KEY-----") || strings.HasSuffix(c.HuifuPrivateKey, "\n") {
		t.Fatalf("key from file: %q", c.HuifuPrivateKey)
	}
	env["CHARGEFLOW_HUIFU_PRIVATE_KEY_FILE"] = filepath.Join(t.TempDir(), "missing")
	_, err = loadConfig(nil, envOf(env), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "CHARGEFLOW_HUIFU_PRIVATE_KEY_FILE") {
		t.Fatalf("missing secret file: %v", err)
	}
}

// Every bad setting is reported, one line each, naming its variable, and
// no secret value appears in the message.
func TestConfigOneLinePerBadSetting(t *testing.T) {
	env := map[string]string{
		"CHARGEFLOW_PUBLIC_URL":      "ftp://x",
		"CHARGEFLOW_MQTT_URL":        "http://broker",
		"CHARGEFLOW_LOG_FORMAT":      "yaml",
		"CHARGEFLOW_START_TIMEOUT":   "soon",
		"CHARGEFLOW_DEBIT_RETRY":     "1m,never",
		"CHARGEFLOW_APP_TOKENS":      "miniapp-without-token",
		"CHARGEFLOW_OPERATOR_TOKENS": "alice:short",
		"CHARGEFLOW_MQTT_PREFIX":     "ev/#",
	}
	_, err := loadConfig(nil, envOf(env), &bytes.Buffer{})
	if err == nil {
		t.Fatal("bad configuration accepted")
	}
	msg := err.Error()
	for _, v := range []string{"CHARGEFLOW_PUBLIC_URL", "CHARGEFLOW_MQTT_URL", "CHARGEFLOW_LOG_FORMAT", "CHARGEFLOW_START_TIMEOUT",
		"CHARGEFLOW_DEBIT_RETRY", "CHARGEFLOW_APP_TOKENS", "CHARGEFLOW_OPERATOR_TOKENS", "CHARGEFLOW_MQTT_PREFIX",
		"CHARGEFLOW_HUIFU_BASE_URL"} {
		if n := strings.Count(msg, v+":"); n != 1 {
			t.Errorf("%s named %d times in:\n%s", v, n, msg)
		}
	}
	if strings.Contains(msg, "short") && strings.Contains(msg, "alice:short") {
		t.Errorf("a token leaked: %s", msg)
	}
	// With Huifu configured, each missing identity is named.
	env = prodEnv()
	delete(env, "CHARGEFLOW_HUIFU_SYS_ID")
	delete(env, "CHARGEFLOW_PAYSCORE_SERVICE_ID")
	_, err = loadConfig(nil, envOf(env), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "CHARGEFLOW_HUIFU_SYS_ID:") || !strings.Contains(err.Error(), "CHARGEFLOW_PAYSCORE_SERVICE_ID:") {
		t.Fatalf("missing identities: %v", err)
	}
	if strings.Contains(err.Error(), env["CHARGEFLOW_HUIFU_PRIVATE_KEY"]) || strings.Contains(err.Error(), "ops-secret-1") {
		t.Fatalf("a secret leaked: %v", err)
	}
}

func TestConfigDevNeedsNothing(t *testing.T) {
	c, err := loadConfig([]string{"--dev"}, envOf(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Dev || !c.DemoTraffic || c.HuifuBaseURL != "" || c.AppTokens[devAppToken] == "" || c.OperatorTokens[devOperatorToken] == "" {
		t.Fatalf("dev config %+v", c)
	}
	if _, err := loadConfig(nil, envOf(nil), &bytes.Buffer{}); err == nil {
		t.Fatal("production without configuration accepted")
	}
}

// A bad start-up stops with the message and starts nothing.
func TestServeRefusesBadConfiguration(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"serve", "--log-format", "xml"}, envOf(prodEnv()), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "CHARGEFLOW_LOG_FORMAT: must be text or json") {
		t.Fatalf("err = %v", err)
	}
}

func TestUnknownCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"serv"}, envOf(nil), &out, &errOut); err == nil || !strings.Contains(errOut.String(), "usage") {
		t.Fatalf("err = %v, stderr %q", err, errOut.String())
	}
	if err := run(context.Background(), nil, envOf(nil), &out, &errOut); err != nil || !strings.Contains(out.String(), "serve") {
		t.Fatalf("help: %v %q", err, out.String())
	}
}

// CHARGEFLOW_REDIS_WAIT_TIMEOUT: 200ms by default, 0 turns the durability
// wait off, and a value outside 0…2s is refused with its name.
func TestConfigRedisWaitTimeout(t *testing.T) {
	for v, want := range map[string]time.Duration{"": 200 * time.Millisecond, "0": 0, "1s": time.Second} {
		env := prodEnv()
		if v != "" {
			env["CHARGEFLOW_REDIS_WAIT_TIMEOUT"] = v
		}
		c, err := loadConfig(nil, envOf(env), &bytes.Buffer{})
		if err != nil {
			t.Errorf("%q: %v", v, err)
		} else if c.RedisWaitTimeout != want {
			t.Errorf("%q: %s, want %s", v, c.RedisWaitTimeout, want)
		}
	}
	for _, v := range []string{"-1s", "3s", "soon"} {
		env := prodEnv()
		env["CHARGEFLOW_REDIS_WAIT_TIMEOUT"] = v
		if _, err := loadConfig(nil, envOf(env), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "CHARGEFLOW_REDIS_WAIT_TIMEOUT:") {
			t.Errorf("%q: %v", v, err)
		}
	}
}
