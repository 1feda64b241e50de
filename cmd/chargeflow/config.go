package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/session"
)

// setting is one configuration variable of docs/contract.md §4. Its flag is the
// variable's name without CHARGEFLOW_, lower case, '_' → '-'
// (CHARGEFLOW_HTTP_ADDR ⇔ --http-addr).
type setting struct {
	env    string
	def    string
	secret bool // may be given as <env>_FILE; never printed
	help   string
}

var settings = []setting{
	{env: "CHARGEFLOW_HTTP_ADDR", def: ":8080", help: "HTTP listen address"},
	{env: "CHARGEFLOW_PUBLIC_URL", def: "http://localhost:8080", help: "base URL Huifu reaches us at (notify_url = this + /notify/huifu/payscore)"},
	{env: "CHARGEFLOW_REDIS_URL", secret: true, help: "Redis URL (redis://, rediss://); empty = embedded store"},
	{env: "CHARGEFLOW_REDIS_PREFIX", def: "chargeflow", help: "key prefix in Redis, so that deployments can share one"},
	{env: "CHARGEFLOW_REDIS_WAIT_TIMEOUT", def: "200ms", help: "how long a start, debit, refund or charger ack waits for a Redis replica to hold its commit (WAIT); 0 = don't wait"},
	{env: "CHARGEFLOW_DATA_DIR", def: "./data", help: "embedded store directory (and the embedded broker's state)"},
	{env: "CHARGEFLOW_MQTT_URL", help: "external broker (tcp://, ssl://, mqtts://); empty = embedded broker"},
	{env: "CHARGEFLOW_MQTT_USERNAME", help: "chargeflow's own broker account"},
	{env: "CHARGEFLOW_MQTT_PASSWORD", secret: true, help: "chargeflow's own broker password"},
	{env: "CHARGEFLOW_MQTT_LISTEN", def: ":1883", help: "embedded broker's listen address"},
	{env: "CHARGEFLOW_MQTT_TLS_LISTEN", help: "embedded broker's TLS listen address (off when empty)"},
	{env: "CHARGEFLOW_MQTT_TLS_CERT", help: "PEM certificate chain of the TLS listener (read again when the file changes)"},
	{env: "CHARGEFLOW_MQTT_TLS_KEY", help: "PEM private key of the TLS listener (read again when the file changes)"},
	{env: "CHARGEFLOW_MQTT_CA_FILE", help: "PEM CA bundle trusted for ssl://, mqtts:// and tls:// broker URLs (system roots when empty)"},
	{env: "CHARGEFLOW_MQTT_PREFIX", def: "ev/v1", help: "topic prefix"},
	{env: "CHARGEFLOW_MQTT_SHARE_GROUP", help: "subscribe charger topics as $share/<group>/… so instances split the load"},
	{env: "CHARGEFLOW_INSTANCE_ID", help: "this process's name (MQTT client id suffix, lease owner); default host name + pid"},
	{env: "CHARGEFLOW_HUIFU_BASE_URL", help: "Huifu API base; empty = built-in sandbox (--dev only)"},
	{env: "CHARGEFLOW_HUIFU_SYS_ID", help: "Huifu sys_id"},
	{env: "CHARGEFLOW_HUIFU_PRODUCT_ID", help: "Huifu product_id"},
	{env: "CHARGEFLOW_HUIFU_MERCHANT_ID", help: "the merchant's huifu_id sent in data"},
	{env: "CHARGEFLOW_HUIFU_PRIVATE_KEY", secret: true, help: "merchant RSA private key (PKCS#8, base64 or PEM)"},
	{env: "CHARGEFLOW_HUIFU_PUBLIC_KEY", help: "Huifu's RSA public key (PKIX, base64 or PEM)"},
	{env: "CHARGEFLOW_PAYSCORE_SERVICE_ID", help: "WeChat Pay Score service id"},
	{env: "CHARGEFLOW_APP_TOKENS", secret: true, help: "comma-separated name:token pairs for the app role"},
	{env: "CHARGEFLOW_OPERATOR_TOKENS", secret: true, help: "comma-separated name:token pairs for the operator role"},
	{env: "CHARGEFLOW_LOG_FORMAT", def: "text", help: "text or json"},
	{env: "CHARGEFLOW_CONFIRM_TIMEOUT", def: "5m", help: "how long the user has to confirm"},
	{env: "CHARGEFLOW_START_TIMEOUT", def: "60s", help: "how long a charger has to start"},
	{env: "CHARGEFLOW_STOP_TIMEOUT", def: "60s", help: "how long a charger has to stop"},
	{env: "CHARGEFLOW_OFFLINE_GRACE", def: "10m", help: "how long an offline charger's session waits for its queued end"},
	{env: "CHARGEFLOW_POLL_INTERVAL", def: "30s", help: "how often an order is queried while a notification is awaited"},
	{env: "CHARGEFLOW_DEBIT_RETRY", def: "1m,5m,30m,2h,6h,24h", help: "debit retry back-off; the last one repeats"},
	{env: "CHARGEFLOW_RECONCILE_AT", def: "10:00", help: "Beijing time of day the daily reconciliation of the previous day runs (off disables)"},
	{env: "CHARGEFLOW_WEBHOOK_URL", help: "where session events are POSTed (off when empty)"},
	{env: "CHARGEFLOW_WEBHOOK_SECRET", secret: true, help: "the HMAC key that signs webhook events (required with CHARGEFLOW_WEBHOOK_URL)"},
	{env: "CHARGEFLOW_WEBHOOK_RETRY", def: "10s,30s,1m,5m,15m,30m,1h", help: "webhook retry back-off within the 24 h delivery window; the last one repeats"},
}

// Config is the parsed configuration.
type Config struct {
	Dev         bool
	DemoTraffic bool

	HTTPAddr, PublicURL            string
	RedisURL, RedisPrefix, DataDir string
	// RedisWaitTimeout bounds the durability WAIT (0: the policy is off).
	RedisWaitTimeout time.Duration

	MQTTURL, MQTTUsername, MQTTPassword, MQTTListen, MQTTPrefix, MQTTShareGroup string

	MQTTTLSListen, MQTTTLSCert, MQTTTLSKey, MQTTCAFile string // mqtttls.go

	InstanceID string

	HuifuBaseURL, HuifuSysID, HuifuProductID, HuifuMerchantID string
	HuifuPrivateKey, HuifuPublicKey, PayScoreServiceID        string

	AppTokens, OperatorTokens map[string]string // token → name

	LogFormat string
	Machine   fsm.Config

	// ReconcileAt is the Beijing time of day (from midnight) of the daily
	// reconciliation; ReconcileOn is false when it is off.
	ReconcileAt time.Duration
	ReconcileOn bool

	Webhooks webhookConfig
}

// Dev tokens, printed at start of serve --dev.
const (
	devAppToken      = "dev-app"
	devOperatorToken = "dev-operator"
)

// loadConfig reads flags, the environment (and <VAR>_FILE for secrets) and
// the optional --config file, in that order of precedence. Every bad setting
// is reported, one line each, naming the variable; nothing secret is printed.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dev := fs.Bool("dev", false, "everything embedded, zero set-up: broker, store, Pay Score sandbox, simulated chargers, dev tokens")
	demo := fs.Bool("demo-traffic", true, "with --dev: play the mini-program, starting and stopping sessions on the simulated chargers")
	configFile := fs.String("config", "", "optional config file of CHARGEFLOW_*=value lines")
	flagVals := map[string]*string{}
	for _, s := range settings {
		name := flagName(s.env)
		help := s.help + " (env " + s.env + ")"
		flagVals[s.env] = fs.String(name, "", help)
	}
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: chargeflow serve [--dev] [--config file] [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	setFlags := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { setFlags[f.Name] = true })

	fileVals := map[string]string{}
	var problems []string
	if *configFile != "" {
		var err error
		fileVals, err = readConfigFile(*configFile)
		if err != nil {
			return nil, err
		}
	}
	vals := map[string]string{}
	for _, s := range settings {
		v := s.def
		if fv, has := fileVals[s.env]; has {
			v = fv
		}
		if s.secret {
			if path := getenv(s.env + "_FILE"); path != "" {
				b, err := os.ReadFile(path)
				if err != nil {
					problems = append(problems, fmt.Sprintf("%s_FILE: cannot read %s: %v", s.env, path, errors.Unwrap(err)))
				} else {
					v = strings.TrimRight(string(b), "\r\n")
				}
			}
		}
		if ev := getenv(s.env); ev != "" {
			v = ev
		}
		if setFlags[flagName(s.env)] {
			v = *flagVals[s.env]
		}
		vals[s.env] = v
	}
	for k := range fileVals {
		if !knownSetting(k) {
			problems = append(problems, fmt.Sprintf("%s: unknown setting in %s", k, *configFile))
		}
	}

	c := &Config{Dev: *dev, DemoTraffic: *demo && *dev,
		HTTPAddr: vals["CHARGEFLOW_HTTP_ADDR"], PublicURL: strings.TrimRight(vals["CHARGEFLOW_PUBLIC_URL"], "/"),
		RedisURL: vals["CHARGEFLOW_REDIS_URL"], RedisPrefix: vals["CHARGEFLOW_REDIS_PREFIX"], DataDir: vals["CHARGEFLOW_DATA_DIR"],
		MQTTURL: vals["CHARGEFLOW_MQTT_URL"], MQTTUsername: vals["CHARGEFLOW_MQTT_USERNAME"], MQTTPassword: vals["CHARGEFLOW_MQTT_PASSWORD"],
		MQTTListen: vals["CHARGEFLOW_MQTT_LISTEN"], MQTTPrefix: vals["CHARGEFLOW_MQTT_PREFIX"], MQTTShareGroup: vals["CHARGEFLOW_MQTT_SHARE_GROUP"],
		MQTTTLSListen: vals["CHARGEFLOW_MQTT_TLS_LISTEN"], MQTTTLSCert: vals["CHARGEFLOW_MQTT_TLS_CERT"],
		MQTTTLSKey: vals["CHARGEFLOW_MQTT_TLS_KEY"], MQTTCAFile: vals["CHARGEFLOW_MQTT_CA_FILE"],
		InstanceID:   vals["CHARGEFLOW_INSTANCE_ID"],
		HuifuBaseURL: strings.TrimRight(vals["CHARGEFLOW_HUIFU_BASE_URL"], "/"), HuifuSysID: vals["CHARGEFLOW_HUIFU_SYS_ID"],
		HuifuProductID: vals["CHARGEFLOW_HUIFU_PRODUCT_ID"], HuifuMerchantID: vals["CHARGEFLOW_HUIFU_MERCHANT_ID"],
		HuifuPrivateKey: vals["CHARGEFLOW_HUIFU_PRIVATE_KEY"], HuifuPublicKey: vals["CHARGEFLOW_HUIFU_PUBLIC_KEY"],
		PayScoreServiceID: vals["CHARGEFLOW_PAYSCORE_SERVICE_ID"],
		LogFormat:         vals["CHARGEFLOW_LOG_FORMAT"],
	}
	if c.InstanceID == "" {
		host, _ := os.Hostname()
		c.InstanceID = sanitizeID(fmt.Sprintf("%s-%d", host, os.Getpid()))
	}

	bad := func(env, format string, args ...any) {
		problems = append(problems, env+": "+fmt.Sprintf(format, args...))
	}
	if c.HTTPAddr == "" {
		bad("CHARGEFLOW_HTTP_ADDR", "must not be empty")
	}
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("CHARGEFLOW_PUBLIC_URL", "must be an http(s) URL, got %q", c.PublicURL)
	}
	if c.RedisPrefix == "" || strings.ContainsAny(c.RedisPrefix, "{} ") {
		bad("CHARGEFLOW_REDIS_PREFIX", "must be a non-empty name without braces or spaces")
	}
	if c.RedisURL != "" {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
			bad("CHARGEFLOW_REDIS_URL", "must be a redis:// or rediss:// URL")
		}
	} else if c.DataDir == "" {
		bad("CHARGEFLOW_DATA_DIR", "must not be empty when CHARGEFLOW_REDIS_URL is empty")
	}
	if c.MQTTURL != "" {
		if u, err := url.Parse(c.MQTTURL); err != nil || !map[string]bool{"tcp": true, "ssl": true, "mqtts": true, "mqtt": true, "tls": true}[u.Scheme] || u.Host == "" {
			bad("CHARGEFLOW_MQTT_URL", "must be a tcp://, ssl:// or mqtts:// URL, got %q", c.MQTTURL)
		}
	} else if c.MQTTListen == "" {
		bad("CHARGEFLOW_MQTT_LISTEN", "must not be empty when CHARGEFLOW_MQTT_URL is empty")
	}
	c.checkMQTTTLS(bad)
	if c.MQTTPrefix == "" || strings.ContainsAny(c.MQTTPrefix, "#+") || strings.HasPrefix(c.MQTTPrefix, "/") || strings.HasSuffix(c.MQTTPrefix, "/") {
		bad("CHARGEFLOW_MQTT_PREFIX", "must be a topic prefix without wildcards or surrounding '/', got %q", c.MQTTPrefix)
	}
	if strings.ContainsAny(c.MQTTShareGroup, "/#+") {
		bad("CHARGEFLOW_MQTT_SHARE_GROUP", "must be a plain name")
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("CHARGEFLOW_LOG_FORMAT", "must be text or json, got %q", c.LogFormat)
	}
	if c.HuifuBaseURL == "" {
		if !c.Dev {
			bad("CHARGEFLOW_HUIFU_BASE_URL", "is required (the built-in Pay Score sandbox is for --dev only)")
		}
	} else {
		if u, err := url.Parse(c.HuifuBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("CHARGEFLOW_HUIFU_BASE_URL", "must be an http(s) URL")
		}
		for _, req := range []struct{ env, v string }{
			{"CHARGEFLOW_HUIFU_SYS_ID", c.HuifuSysID}, {"CHARGEFLOW_HUIFU_PRODUCT_ID", c.HuifuProductID},
			{"CHARGEFLOW_HUIFU_MERCHANT_ID", c.HuifuMerchantID}, {"CHARGEFLOW_HUIFU_PRIVATE_KEY", c.HuifuPrivateKey},
			{"CHARGEFLOW_HUIFU_PUBLIC_KEY", c.HuifuPublicKey}, {"CHARGEFLOW_PAYSCORE_SERVICE_ID", c.PayScoreServiceID},
		} {
			if req.v == "" {
				bad(req.env, "is required with CHARGEFLOW_HUIFU_BASE_URL")
			}
		}
	}
	var appErr, opErr error
	if c.AppTokens, appErr = parseTokens(vals["CHARGEFLOW_APP_TOKENS"]); appErr != nil {
		bad("CHARGEFLOW_APP_TOKENS", "%v", appErr)
	}
	if c.OperatorTokens, opErr = parseTokens(vals["CHARGEFLOW_OPERATOR_TOKENS"]); opErr != nil {
		bad("CHARGEFLOW_OPERATOR_TOKENS", "%v", opErr)
	}
	if c.Dev {
		if len(c.AppTokens) == 0 && appErr == nil {
			c.AppTokens = map[string]string{devAppToken: "dev"}
		}
		if len(c.OperatorTokens) == 0 && opErr == nil {
			c.OperatorTokens = map[string]string{devOperatorToken: "dev"}
		}
	} else {
		if len(c.AppTokens) == 0 && appErr == nil {
			bad("CHARGEFLOW_APP_TOKENS", "is required (name:token pairs)")
		}
		if len(c.OperatorTokens) == 0 && opErr == nil {
			bad("CHARGEFLOW_OPERATOR_TOKENS", "is required (name:token pairs)")
		}
	}
	for tok := range c.AppTokens {
		if _, dup := c.OperatorTokens[tok]; dup {
			bad("CHARGEFLOW_OPERATOR_TOKENS", "a token may not be both an app and an operator token")
		}
	}

	c.Machine = fsm.DefaultConfig()
	durations := []struct {
		env string
		dst *time.Duration
	}{
		{"CHARGEFLOW_CONFIRM_TIMEOUT", &c.Machine.ConfirmTimeout}, {"CHARGEFLOW_START_TIMEOUT", &c.Machine.StartTimeout},
		{"CHARGEFLOW_STOP_TIMEOUT", &c.Machine.StopTimeout}, {"CHARGEFLOW_OFFLINE_GRACE", &c.Machine.OfflineGrace},
		{"CHARGEFLOW_POLL_INTERVAL", &c.Machine.PollInterval},
	}
	for _, d := range durations {
		v, err := time.ParseDuration(vals[d.env])
		if err != nil || v <= 0 {
			bad(d.env, "must be a positive Go duration like 60s or 5m, got %q", vals[d.env])
			continue
		}
		*d.dst = v
	}
	if at, on, err := session.ParseTimeOfDay(vals["CHARGEFLOW_RECONCILE_AT"]); err != nil {
		bad("CHARGEFLOW_RECONCILE_AT", "%v", err)
	} else {
		c.ReconcileAt, c.ReconcileOn = at, on
	}
	if v, err := time.ParseDuration(vals["CHARGEFLOW_REDIS_WAIT_TIMEOUT"]); err != nil || v < 0 || v > 2*time.Second {
		bad("CHARGEFLOW_REDIS_WAIT_TIMEOUT", "must be a Go duration from 0 (off) to 2s, got %q", vals["CHARGEFLOW_REDIS_WAIT_TIMEOUT"])
	} else {
		c.RedisWaitTimeout = v
	}
	c.Machine.DebitRetry = nil
	for _, part := range strings.Split(vals["CHARGEFLOW_DEBIT_RETRY"], ",") {
		v, err := time.ParseDuration(strings.TrimSpace(part))
		if err != nil || v <= 0 {
			bad("CHARGEFLOW_DEBIT_RETRY", "must be comma-separated positive durations, got %q", vals["CHARGEFLOW_DEBIT_RETRY"])
			break
		}
		c.Machine.DebitRetry = append(c.Machine.DebitRetry, v)
	}
	c.Webhooks = parseWebhookConfig(vals, bad)
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, fmt.Errorf("bad configuration:\n  %s", strings.Join(problems, "\n  "))
	}
	return c, nil
}

func flagName(env string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(env, "CHARGEFLOW_")), "_", "-")
}

func knownSetting(env string) bool {
	for _, s := range settings {
		if s.env == env {
			return true
		}
	}
	return false
}

// readConfigFile reads CHARGEFLOW_*=value lines; '#' starts a comment.
func readConfigFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	vals := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("--config %s:%d: want NAME=value", path, n)
		}
		vals[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
	}
	return vals, sc.Err()
}

// parseTokens parses "name:token,name:token" into token → name.
func parseTokens(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, pair := range strings.Split(s, ",") {
		name, tok, ok := strings.Cut(strings.TrimSpace(pair), ":")
		if !ok || name == "" || tok == "" {
			return nil, errors.New("want comma-separated name:token pairs")
		}
		if len(tok) < 8 && tok != devAppToken && tok != devOperatorToken {
			return nil, fmt.Errorf("the token of %q is shorter than 8 characters", name)
		}
		if _, dup := out[tok]; dup {
			return nil, fmt.Errorf("a token is given twice")
		}
		out[tok] = name
	}
	return out, nil
}

func sanitizeID(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			b.WriteRune(r)
		}
	}
	return b.String()
}
