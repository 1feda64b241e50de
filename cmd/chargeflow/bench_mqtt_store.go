package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/chargeflow/chargeflow/charger"
)

// The cost of the embedded broker's storage hook (docs/operations.md, "A
// restart of the embedded stack"): the same traffic through a broker that
// keeps its state in a bbolt file and through one that keeps it in memory.

// benchBroker is an embedded broker with n bench chargers registered;
// store, when set, is its state file.
type benchBroker struct {
	broker *charger.EmbeddedBroker
	ids    []string
	dir    string
}

func newBenchBroker(ctx context.Context, b *bench, n int, persist bool, h charger.Handler) (*benchBroker, error) {
	creds := benchCreds{}
	bb := &benchBroker{}
	for i := range n {
		id := fmt.Sprintf("BENCH-%d", i)
		hash, err := charger.HashPassword("pw-" + id)
		if err != nil {
			return nil, err
		}
		creds[id] = hash
		bb.ids = append(bb.ids, id)
	}
	cfg := charger.EmbeddedConfig{ListenAddr: "127.0.0.1:0", Credentials: creds, Logger: b.brokerLog}
	if persist {
		dir, err := os.MkdirTemp("", "chargeflow-bench-broker-")
		if err != nil {
			return nil, err
		}
		bb.dir, cfg.StorePath = dir, filepath.Join(dir, brokerStoreFile)
	}
	broker, err := charger.NewEmbeddedBroker(cfg)
	if err == nil {
		err = broker.Start(ctx, h)
	}
	if err != nil {
		bb.close()
		return nil, err
	}
	bb.broker = broker
	return bb, nil
}

func (bb *benchBroker) close() {
	if bb.broker != nil {
		_ = bb.broker.Close()
	}
	if bb.dir != "" {
		_ = os.RemoveAll(bb.dir)
	}
}

// ingest: meter samples from mqttPublishers chargers to the Handler.
func (b *bench) ingest(ctx context.Context, persist bool) (int64, time.Duration, error) {
	r := &mqttRig{batch: 250, topics: charger.Topics{Prefix: charger.DefaultPrefix}}
	bb, err := newBenchBroker(ctx, b, mqttPublishers, persist, r.handler)
	if err != nil {
		return 0, 0, err
	}
	defer bb.close()
	r.url = bb.broker.URL()
	if err := r.connect(bb.ids, bb.ids, func(i int) (string, string) { return bb.ids[i], "pw-" + bb.ids[i] }); err != nil {
		r.close()
		return 0, 0, err
	}
	defer r.close()
	return r.pump(ctx, b.duration, &r.countLink)
}

// emitMQTTEmbeddedStore: meter ingest with the storage hook, beside the
// same without it. Inbound QoS 1 publishes are not stored (their PUBACK is
// sent at once), so the hook should cost little here.
func (b *bench) emitMQTTEmbeddedStore(ctx context.Context) {
	const name = "mqtt.embedded.store"
	memN, memT, err := b.ingest(ctx, false)
	if err != nil {
		b.fail(name, fmt.Errorf("in memory: %w", err))
		return
	}
	n, d, err := b.ingest(ctx, true)
	if err != nil {
		b.fail(name, err)
		return
	}
	b.emit(benchRow{Scenario: name, Figure: float64(n) / d.Seconds(), Unit: "msgs/s, state on disk", Ops: n,
		Baseline: float64(memN) / memT.Seconds(), BaselineUnit: "msgs/s, state in memory", BaselineOps: memN,
		Notes: fmt.Sprintf("%d publishers, QoS 1 meter samples; bbolt storage hook", mqttPublishers)})
}

// burstChargers receive a command burst at once.
const burstChargers = 8

// burst: commands published through the broker (SendCommand, the engine's
// path) to burstChargers connected chargers, batch after batch, each batch
// waited for at the chargers. Each command is an in-flight QoS 1 message
// the hook writes and, once acknowledged, deletes.
func (b *bench) burst(ctx context.Context, persist bool) (int64, time.Duration, error) {
	var got atomic.Int64
	bb, err := newBenchBroker(ctx, b, burstChargers, persist, func(context.Context, charger.Inbound) error { return nil })
	if err != nil {
		return 0, 0, err
	}
	defer bb.close()
	topics := charger.Topics{Prefix: charger.DefaultPrefix}
	for _, id := range bb.ids {
		o := paho.NewClientOptions().SetStore(charger.NewPahoStore()).AddBroker(bb.broker.URL()).SetClientID(id).SetUsername(id).SetPassword("pw-" + id).
			SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
			SetDefaultPublishHandler(func(paho.Client, paho.Message) { got.Add(1) })
		c := paho.NewClient(o)
		if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			return 0, 0, fmt.Errorf("connect %s: %v", id, t.Error())
		}
		defer c.Disconnect(100)
		if t := c.Subscribe(topics.Down(id), 1, nil); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			return 0, 0, fmt.Errorf("subscribe %s: %v", id, t.Error())
		}
	}
	const perCharger = 50 // a batch stays far below the broker's in-flight limit
	cmd := charger.Command{Type: charger.CmdStop, SessionID: "benchsession", Connector: 1}
	start := time.Now()
	var sent int64
	for time.Since(start) < b.duration && sent < benchMaxOps {
		var wg sync.WaitGroup
		errs := make(chan error, len(bb.ids))
		for _, id := range bb.ids {
			wg.Go(func() {
				for i := range perCharger {
					c := cmd
					c.CmdID = fmt.Sprintf("bench-%d-%d", sent, i)
					if err := bb.broker.SendCommand(ctx, id, c); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return 0, 0, err
		}
		sent += int64(perCharger * len(bb.ids))
		progress, last := time.Now(), got.Load()
		for n := last; n < sent; n = got.Load() {
			if n != last {
				progress, last = time.Now(), n
			} else if time.Since(progress) > 5*time.Second {
				return 0, 0, fmt.Errorf("chargers received %d of %d commands, none for 5s", n, sent)
			}
			if err := ctx.Err(); err != nil {
				return 0, 0, err
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	return sent, time.Since(start), nil
}

// emitMQTTBurst: a command burst with the storage hook, beside the same
// without it.
func (b *bench) emitMQTTBurst(ctx context.Context) {
	const name = "mqtt.embedded.burst"
	memN, memT, err := b.burst(ctx, false)
	if err != nil {
		b.fail(name, fmt.Errorf("in memory: %w", err))
		return
	}
	n, d, err := b.burst(ctx, true)
	if err != nil {
		b.fail(name, err)
		return
	}
	b.emit(benchRow{Scenario: name, Figure: float64(n) / d.Seconds(), Unit: "cmds/s, state on disk", Ops: n,
		Baseline: float64(memN) / memT.Seconds(), BaselineUnit: "cmds/s, state in memory", BaselineOps: memN,
		Notes: fmt.Sprintf("%d chargers, bursts of %d QoS 1 commands each; bbolt storage hook", burstChargers, 50)})
}
