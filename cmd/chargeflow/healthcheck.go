package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

func init() { commands["healthcheck"] = runHealthcheck }

// runHealthcheck asks a running service whether it is up (docs/contract.md
// §5), for images that have no curl: nil when the URL answers 200, an error
// naming the URL and what came back otherwise. By default it asks /healthz on
// the loopback address of the port CHARGEFLOW_HTTP_ADDR names, so a container
// whose environment moved the port still checks the right one.
func runHealthcheck(ctx context.Context, args []string, getenv func(string) string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "URL to GET (default http://127.0.0.1:<port of CHARGEFLOW_HTTP_ADDR>/healthz)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("healthcheck: unexpected argument %q", fs.Arg(0))
	}
	if *url == "" {
		u, err := healthzURL(getenv("CHARGEFLOW_HTTP_ADDR"))
		if err != nil {
			return fmt.Errorf("healthcheck: %w", err)
		}
		*url = u
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: --url: %w", err)
	}
	req.Close = true // one request: keep no idle connection behind
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s: %s", *url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// healthzURL is the loopback /healthz URL for the listen address addr (the
// configuration table's default when empty).
func healthzURL(addr string) (string, error) {
	if addr == "" {
		addr = settingDefault("CHARGEFLOW_HTTP_ADDR")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("CHARGEFLOW_HTTP_ADDR %q: %w", addr, err)
	}
	switch host {
	case "", "0.0.0.0", "::":
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz", nil
}
