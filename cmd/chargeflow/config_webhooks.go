package main

import (
	"net/url"
	"strings"
	"time"
)

// webhookConfig is the webhook sender's configuration (docs/contract.md §4).
type webhookConfig struct {
	// URL is empty when webhooks are off.
	URL, Secret string
	Retry       []time.Duration
}

// parseWebhookConfig reads CHARGEFLOW_WEBHOOK_*: off when the URL is
// empty; with a URL, an http(s) URL and a secret are required.
func parseWebhookConfig(vals map[string]string, bad func(env, format string, args ...any)) webhookConfig {
	w := webhookConfig{URL: vals["CHARGEFLOW_WEBHOOK_URL"], Secret: vals["CHARGEFLOW_WEBHOOK_SECRET"]}
	for _, part := range strings.Split(vals["CHARGEFLOW_WEBHOOK_RETRY"], ",") {
		v, err := time.ParseDuration(strings.TrimSpace(part))
		if err != nil || v <= 0 {
			bad("CHARGEFLOW_WEBHOOK_RETRY", "must be comma-separated positive durations, got %q", vals["CHARGEFLOW_WEBHOOK_RETRY"])
			w.Retry = nil
			break
		}
		w.Retry = append(w.Retry, v)
	}
	if w.URL == "" {
		return w
	}
	if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("CHARGEFLOW_WEBHOOK_URL", "must be an http(s) URL")
	}
	if w.Secret == "" {
		bad("CHARGEFLOW_WEBHOOK_SECRET", "is required with CHARGEFLOW_WEBHOOK_URL (or CHARGEFLOW_WEBHOOK_SECRET_FILE)")
	} else if len(w.Secret) < 16 {
		bad("CHARGEFLOW_WEBHOOK_SECRET", "must be at least 16 characters")
	}
	return w
}
