package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/charger/sim"
)

func init() { commands["sim"] = runSim }

// runSim runs a fleet of simulated chargers against a broker until ctx is
// done, then shuts them down cleanly.
func runSim(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	broker := fs.String("broker", simOrEnv(getenv("CHARGEFLOW_MQTT_URL"), "tcp://127.0.0.1:1883"), "MQTT broker URL (tcp://, ssl://, mqtts://)")
	caFile := fs.String("ca-file", getenv("CHARGEFLOW_MQTT_CA_FILE"), "PEM CA bundle the chargers trust for ssl:// and mqtts:// (env CHARGEFLOW_MQTT_CA_FILE; empty: the system roots)")
	prefix := fs.String("prefix", simOrEnv(getenv("CHARGEFLOW_MQTT_PREFIX"), charger.DefaultPrefix), "topic prefix")
	n := fs.Int("chargers", 4, "number of chargers SIM-001…SIM-N (ignored with --ids)")
	ids := fs.String("ids", "", "comma-separated charger ids")
	password := fs.String("password", "", "password of every charger (empty: none)")
	connectors := fs.Int("connectors", 2, "connectors per charger")
	meterEvery := fs.Duration("meter-interval", 10*time.Second, "meter period while charging")
	power := fs.Int64("power", 7040, "charging power in W")
	plug := fs.Bool("plug", true, "plug a car into every connector at start")
	reject := fs.String("reject", "", "reject every start with this reason (busy, faulted, …)")
	neverStart := fs.Bool("never-start", false, "accept starts but never begin charging")
	dup := fs.Bool("duplicate", false, "send every message twice")
	skew := fs.Duration("skew", 0, "charger clock skew (e.g. 10m, -3m)")
	die := fs.Duration("die-after", 0, "kill a random charger (no DISCONNECT: the will fires) this long after its session starts; 0: never")
	stateDir := fs.String("state-dir", "", "keep each charger's non-volatile memory in `dir`/<id>.json, so chargers survive a restart (empty: memory only)")
	verbose := fs.Bool("v", false, "log debug messages")
	if err := fs.Parse(args); err != nil {
		return err
	}

	var list []string
	if *ids != "" {
		for _, id := range strings.Split(*ids, ",") {
			list = append(list, strings.TrimSpace(id))
		}
	} else {
		for i := 1; i <= *n; i++ {
			list = append(list, fmt.Sprintf("SIM-%03d", i))
		}
	}
	var conns []int
	for c := 1; c <= *connectors; c++ {
		conns = append(conns, c)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("component", "sim")
	var specs []sim.ChargerSpec
	for _, id := range list {
		specs = append(specs, sim.ChargerSpec{ID: id, Password: *password, Connectors: conns})
	}
	tlsConfig, err := charger.ClientTLSConfig(*caFile)
	if err != nil {
		return fmt.Errorf("sim: --ca-file: %w", err)
	}
	fleet, err := sim.New(sim.Config{BrokerURL: *broker, Prefix: *prefix, Chargers: specs, TLSConfig: tlsConfig,
		MeterInterval: *meterEvery, PowerW: *power, Logger: log, StateDir: *stateDir})
	if err != nil {
		return err
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = fleet.Start(startCtx)
	cancel()
	if err != nil {
		_ = fleet.Close()
		return fmt.Errorf("sim: start: %w", err)
	}
	for _, c := range fleet.Chargers() {
		c.RejectStart(*reject)
		c.NeverStart(*neverStart)
		c.Duplicate(*dup)
		c.ClockSkew(*skew)
		if *plug {
			for _, cn := range conns {
				_ = c.Plug(cn)
			}
		}
	}
	fmt.Fprintf(stdout, "sim: %d chargers on %s (prefix %s)\n", len(list), *broker, *prefix)

	var wg sync.WaitGroup
	defer wg.Wait()
	if *die > 0 {
		wg.Add(1)
		go func() { // owned by runSim, which waits for it
			defer wg.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				cs := fleet.Chargers()
				c := cs[rand.IntN(len(cs))]
				if s, ok := c.Session(1); ok && s.Seq > 0 && time.Duration(s.Seq)**meterEvery >= *die {
					log.Info("killing charger mid-session", "charger", c.ID())
					c.Kill()
					return
				}
			}
		}()
	}
	<-ctx.Done()
	_ = fleet.Close()
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil
	}
	return ctx.Err()
}

func simOrEnv(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
