// Command example plays the mini-program's backend against a chargeflow
// service with the Go client: it starts a session on a free connector, shows
// the `package` the mini-program would pass to wx.openBusinessView, follows
// the session while the (simulated) user confirms and the car charges, stops
// it, and waits for the payment. It exits 0 once the session is paid.
//
// Against `chargeflow serve --dev` (make run), whose Pay Score sandbox plays
// the WeChat user and confirms by itself after 3 s:
//
//	go run ./client/example -url http://localhost:8080 -token dev-app
//
// docs/integration.md explains each step.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/chargeflow/chargeflow/client"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("example", flag.ContinueOnError)
	base := fs.String("url", "http://localhost:8080", "the chargeflow service")
	token := fs.String("token", "dev-app", "a token of the app role")
	chargers := fs.String("chargers", "SIM-001,SIM-002,SIM-003,SIM-004", "chargers to try, in order")
	connectors := fs.String("connectors", "1,2", "connectors to try on each")
	openid := fs.String("openid", "o-example-user", "the WeChat user's openid")
	maxFen := fs.Int64("max-fen", 3000, "the spending cap, fen")
	chargeFor := fs.Duration("charge-for", 5*time.Second, "how long to charge once energy flows")
	timeout := fs.Duration("timeout", 3*time.Minute, "give up after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c, err := client.New(*base, *token, client.Options{})
	if err != nil {
		return err
	}

	// 1. The user scanned a charger's QR code and tapped "start": create
	// the session with one Idempotency-Key per tap (the client retries with
	// it). A busy connector (the dev demo traffic uses them too) is a 409:
	// try the next one, with a new key since it is another request.
	var s *client.Session
	for _, cp := range strings.Split(*chargers, ",") {
		for _, conn := range strings.Split(*connectors, ",") {
			var n int
			if _, err := fmt.Sscan(conn, &n); err != nil {
				return fmt.Errorf("-connectors: %q: %w", conn, err)
			}
			s, err = c.CreateSession(ctx, client.NewIdempotencyKey(),
				client.CreateSessionRequest{ChargerID: cp, Connector: n, OpenID: *openid, MaxAmountFen: *maxFen})
			if client.ErrorCode(err) == client.CodeConflict {
				fmt.Fprintf(out, "%s connector %d: %v; trying the next\n", cp, n, err)
				continue
			}
			if err != nil {
				return fmt.Errorf("create: %w", err)
			}
			break
		}
		if s != nil {
			break
		}
	}
	if s == nil {
		return errors.New("every connector is busy: try again, or run serve --dev --demo-traffic=false")
	}
	fmt.Fprintf(out, "session %s on %s connector %d: %s\n", s.ID, s.ChargerID, s.Connector, s.State)
	// 2. The mini-program now calls wx.openBusinessView({businessType:
	// 'wxpayScoreUse', extraData: {mch_id, package, …}}) with this package;
	// the user confirms in WeChat (here: the sandbox does).
	fmt.Fprintf(out, "package for wx.openBusinessView: %.60s…\n", s.Package)

	// 3. Follow it (a real backend is told by webhooks; polling works too).
	last := s.State
	stopped := false
	var energySince time.Time
	for {
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return fmt.Errorf("waiting in %s: %w", last, err)
		}
		s, err = c.GetSession(ctx, s.ID)
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		if s.State != last {
			fmt.Fprintf(out, "state %s\n", s.State)
			last = s.State
		}
		switch {
		case s.State == client.StatePaid:
			fmt.Fprintf(out, "paid: %d Wh, %d.%02d yuan (%s)\n", s.EnergyWh, s.AmountFen/100, s.AmountFen%100, lines(s))
			return nil
		case s.State.Final():
			return fmt.Errorf("session ended %s (%s)", s.State, s.CancelReason)
		case s.State == client.StateCharging && !stopped:
			if s.Live == nil || s.Live.EnergyWh <= 0 {
				continue // no energy yet: a stop now would be a session with nothing to bill
			}
			if energySince.IsZero() {
				energySince = time.Now()
				fmt.Fprintf(out, "energy flows: %d Wh so far, %d fen\n", s.Live.EnergyWh, s.Live.AmountFen)
			}
			if time.Since(energySince) < *chargeFor {
				continue
			}
			// 4. The user taps "stop" (or unplugs: the charger ends it).
			if _, err := c.StopSession(ctx, s.ID); err != nil {
				return fmt.Errorf("stop: %w", err)
			}
			stopped = true
			fmt.Fprintf(out, "stop asked after %d Wh\n", s.Live.EnergyWh)
		}
	}
}

func lines(s *client.Session) string {
	parts := make([]string, 0, len(s.Lines))
	for _, l := range s.Lines {
		parts = append(parts, fmt.Sprintf("%s %d", l.Name, l.AmountFen))
	}
	return strings.Join(parts, ", ")
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
