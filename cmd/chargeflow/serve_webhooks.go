package main

import (
	"context"
	"fmt"
	"net/url"

	"github.com/chargeflow/chargeflow/metrics"
	"github.com/chargeflow/chargeflow/store"
	"github.com/chargeflow/chargeflow/webhooks"
)

// startWebhooks registers the webhook metrics and, when CHARGEFLOW_WEBHOOK_URL
// is set, runs the sender until ctx ends (docs/contract.md §3 "Webhooks").
// The metrics exist either way, so that a dashboard shows zeros rather than
// gaps; the engine queues events only when the URL is set.
func (a *app) startWebhooks(ctx context.Context, cfg *Config, st store.Store, met *metrics.Metrics) error {
	obs, err := met.WatchWebhooks(st, 0)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if cfg.Webhooks.URL == "" {
		return nil
	}
	snd, err := webhooks.New(webhooks.Config{URL: cfg.Webhooks.URL, Secret: cfg.Webhooks.Secret, InstanceID: cfg.InstanceID,
		Retry: cfg.Webhooks.Retry}, st, a.log.With("component", "webhooks"), obs, nil)
	if err != nil {
		return fmt.Errorf("CHARGEFLOW_WEBHOOK_URL: %w", err)
	}
	a.wg.Add(1)
	go func() { defer a.wg.Done(); _ = snd.Run(ctx) }()
	if u, perr := url.Parse(cfg.Webhooks.URL); perr == nil {
		a.log.Info("webhooks on", "host", u.Host, "path", u.Path) // never the userinfo or query: they may hold secrets
	}
	return nil
}
