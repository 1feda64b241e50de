package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/chargeflow/chargeflow/payscore/sandbox"
)

func init() { commands["sandbox"] = runSandbox }

// runSandbox serves the Huifu Pay Score sandbox until ctx is done. It prints
// the keys chargeflow needs (the sandbox generates both pairs) and the URLs
// of the API and the control API.
func runSandbox(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "credentials" {
		return runSandboxCredentials(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", ":8090", "listen address")
	autoConfirm := fs.Duration("auto-confirm", 0, "confirm every new order after this delay, as a simulated user (0 = off)")
	allowCancel := fs.Bool("allow-cancel-after-complete", false, "allow cancel of a completed order while no deduction registration is live")
	notifyBackoff := fs.Duration("notify-backoff", 5*time.Second, "wait before the first notification re-send (doubles)")
	serviceID := fs.String("service-id", "", "the only Pay Score service_id create accepts (empty: any)")
	stateFile := fs.String("state-file", "", "keep orders, payments, the replay cache and the generated keys in this file across restarts (empty = memory only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	sb, err := sandbox.New(sandbox.Options{
		AutoConfirm:              *autoConfirm,
		AllowCancelAfterComplete: *allowCancel,
		NotifyBackoff:            *notifyBackoff,
		StateFile:                *stateFile,
		ServiceID:                *serviceID,
		Logger:                   log,
	})
	if err != nil {
		return err
	}
	defer sb.Close()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("sandbox listen: %w", err)
	}
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "Pay Score sandbox on %s\n", base)
	fmt.Fprintf(stdout, "  CHARGEFLOW_HUIFU_BASE_URL=%s\n", base)
	fmt.Fprintf(stdout, "  CHARGEFLOW_HUIFU_PUBLIC_KEY=%s\n", sb.PublicKey())
	fmt.Fprintf(stdout, "  CHARGEFLOW_HUIFU_PRIVATE_KEY=%s\n", sb.MerchantPrivateKey())
	fmt.Fprintf(stdout, "  control API: %s/_sandbox/ (orders/{out_order_no}/confirm|refuse|pay, ledger, notifications, faults/...)\n", base)
	if *autoConfirm > 0 {
		fmt.Fprintf(stdout, "  orders are confirmed automatically after %s\n", *autoConfirm)
	}

	srv := &http.Server{Handler: sb.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("sandbox serve: %w", err)
	case <-ctx.Done():
	}
	// Hung replies (timeout faults) are released by sb.Close; close it first
	// so that Shutdown does not wait for them.
	sb.Close()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("sandbox shutdown: %w", err)
	}
	return nil
}
