package session

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/chargeflow/chargeflow/money"
	"github.com/chargeflow/chargeflow/store"
)

// ParseTimeOfDay reads a Beijing time of day "HH:MM" as the offset from
// midnight; "off" (or "") is disabled (ok false).
func ParseTimeOfDay(s string) (d time.Duration, ok bool, err error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "off") {
		return 0, false, nil
	}
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, false, fmt.Errorf("%q is not HH:MM (Beijing time) or off", s)
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, true, nil
}

// DueDay returns the day the daily run reconciles at now (the previous
// Beijing day, YYYY-MM-DD) and whether its time of day at has come.
func DueDay(now time.Time, at time.Duration) (string, bool) {
	bj := now.In(money.Beijing)
	midnight := time.Date(bj.Year(), bj.Month(), bj.Day(), 0, 0, 0, 0, money.Beijing)
	return midnight.AddDate(0, 0, -1).Format(store.ReconcileDateLayout), !bj.Before(midnight.Add(at))
}

// RunDue runs the daily reconciliation if it is due at now and no instance
// has run it (store.StartReconciliation settles the race): the previous
// Beijing day, once its time of day at has come. It reports whether it ran.
func (r *Reconciler) RunDue(ctx context.Context, at time.Duration) (bool, error) {
	now := r.cfg.Now()
	date, due := DueDay(now, at)
	if !due {
		return false, nil
	}
	started, err := r.cfg.Store.StartReconciliation(ctx, date, r.cfg.Instance, now, r.cfg.RetryAfter)
	if err != nil || !started {
		return false, err
	}
	_, err = r.Run(ctx, date)
	return true, err
}

// Daily runs RunDue every tick (a minute when 0) until ctx ends. Errors are
// logged; the run is retried after RetryAfter.
func (r *Reconciler) Daily(ctx context.Context, at, tick time.Duration) {
	if tick <= 0 {
		tick = time.Minute
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		if _, err := r.RunDue(ctx, at); err != nil && ctx.Err() == nil {
			r.cfg.Log.Warn("daily reconciliation", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
