// Command chargeflow is the whole system in one binary:
//
//	chargeflow serve [--dev]   the service (HTTP API, MQTT link, engine)
//	chargeflow sim             a fleet of simulated chargers
//	chargeflow sandbox         the Huifu Pay Score sandbox as a server
//	chargeflow bench           load scenarios, each figure beside its baseline
//	chargeflow backup --to F   a consistent copy of the embedded store
//	chargeflow version         what the binary was built from
//	chargeflow healthcheck     exit 0 when a running service's /healthz answers 200
//	chargeflow reconcile       a Beijing day's ledger against Huifu's trade bill
//
// main only calls run; everything is injected so tests can start the real
// program in-process.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chargeflow:", err)
		os.Exit(exitCode(err))
	}
}

// command is one subcommand: it runs until ctx is done or it fails.
type command func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error

// commands is filled by the files that implement each subcommand.
var commands = map[string]command{}

const usage = `usage: chargeflow <command> [flags]

commands:
  serve     run the service (serve --dev: everything embedded, zero set-up)
  sim       run simulated chargers against an MQTT broker
  sandbox   run the Huifu Pay Score sandbox (sandbox credentials: the config lines that point at it)
  payscore  payscore check: the go-live probe against Huifu (create 0.01 yuan, query, cancel)
  bench     run the load scenarios and print figures beside their baselines
  backup    copy the embedded store consistently, while serve runs or not (backup --to FILE)
  version   print the module version, VCS revision and time, and Go version
  healthcheck  exit 0 when /healthz answers 200 (--url to ask another URL)
  reconcile reconcile a Beijing day against Huifu's trade bill (--date YYYY-MM-DD)
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
	return cmd(ctx, args[1:], getenv, stdout, stderr)
}
