package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/chargeflow/chargeflow/charger"
)

// benchReconnect: C chargers with passwords connect at once to the embedded
// broker, as after a restart of the embedded stack (docs/operations.md
// "Reconnect storms"). The figure is the time until every one is connected
// and its online state has reached the Handler; the baseline is the same
// storm of C connections on the broker's service account, which costs the
// broker a connection and no registry or password hash. Two rows: the first
// storm (every password checked with the slow hash once, as after a restart)
// and a second one (credentials verified before). Refusals are counted; the
// goal is none (docs/bench.md).
func benchReconnect(ctx context.Context, b *bench) {
	const name = "reconnect"
	c := b.chargers
	creds := benchCreds{}
	pass := make([]string, c)
	ids := make([]string, c)
	for i := range c {
		ids[i] = fmt.Sprintf("%s-%05d", b.runID, i)
		pass[i] = fmt.Sprintf("secret-%s-%d", b.runID, i)
		h, err := charger.HashPassword(pass[i])
		if err != nil {
			b.fail(name, err)
			return
		}
		creds[ids[i]] = h
	}
	servicePass := "bench-" + b.runID
	broker, err := charger.NewEmbeddedBroker(charger.EmbeddedConfig{ListenAddr: "127.0.0.1:0", Credentials: creds,
		ServiceUsername: "chargeflow-bench", ServicePassword: servicePass, Logger: b.brokerLog})
	if err != nil {
		b.fail(name, err)
		return
	}
	var online sync.Map // charger id → struct{}
	var onlineN atomic.Int64
	handler := func(_ context.Context, in charger.Inbound) error {
		if in.Kind == charger.KindState {
			if _, dup := online.LoadOrStore(in.ChargerID, struct{}{}); !dup {
				onlineN.Add(1)
			}
		}
		return nil
	}
	if err := broker.Start(ctx, handler); err != nil {
		b.fail(name, err)
		return
	}
	defer broker.Close()
	url := "tcp://" + broker.Addr()
	topics := charger.Topics{}
	state, err := charger.Encode(charger.StateMsg{Online: true, BootID: "bench", TS: time.Now()})
	if err != nil {
		b.fail(name, err)
		return
	}

	// storm connects every client at once and waits until all are connected
	// (and, for chargers, their state was handed to the Handler).
	storm := func(chargers bool, round int) (time.Duration, int64, error) {
		online.Clear()
		onlineN.Store(0)
		var refused atomic.Int64
		clients := make([]paho.Client, c)
		start := time.Now()
		var wg sync.WaitGroup
		for i := range c {
			wg.Go(func() {
				user, pw, id := "chargeflow-bench", servicePass, fmt.Sprintf("%s-svc%d-%05d", b.runID, round, i)
				if chargers {
					user, pw, id = ids[i], pass[i], ids[i]
				}
				// A refused charger tries again after a second, as firmware does.
				for try := 0; ctx.Err() == nil; try++ {
					cl, err := reconnectPaho(url, id, user, pw)
					if err == nil {
						clients[i] = cl
						if chargers {
							cl.Publish(topics.State(ids[i]), 1, true, state)
						}
						return
					}
					if refused.Add(1) <= 3 {
						b.log.Warn("bench: connect refused", "client", id, "err", err)
					}
					select {
					case <-ctx.Done():
					case <-time.After(time.Second):
					}
				}
			})
		}
		wg.Wait()
		for chargers && onlineN.Load() < int64(c) && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		took := time.Since(start)
		for _, cl := range clients {
			if cl != nil {
				cl.Disconnect(0)
			}
		}
		return took, refused.Load(), ctx.Err()
	}

	base, _, err := storm(false, 0)
	if err != nil {
		b.fail(name, err)
		return
	}
	for round, row := range []string{"reconnect.first", "reconnect.again"} {
		took, refused, err := storm(true, round+1)
		if err != nil {
			b.fail(row, err)
			return
		}
		b.emit(benchRow{Scenario: row, Figure: took.Seconds() * 1000, Unit: "ms all online", Baseline: base.Seconds() * 1000,
			BaselineUnit: "ms service connects", Ops: int64(c), BaselineOps: int64(c),
			Extra: map[string]float64{"refused": float64(refused), "chargers": float64(c)},
			Notes: fmt.Sprintf("%d chargers with passwords at once; %d refusals", c, refused)})
	}
}

// reconnectPaho connects as firmware does: a CONNECT waits up to 30 s for
// its CONNACK.
func reconnectPaho(url, id, user, pass string) (paho.Client, error) {
	o := paho.NewClientOptions().SetStore(charger.NewPahoStore()).AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pass).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(30 * time.Second)
	c := paho.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(35*time.Second) || t.Error() != nil {
		c.Disconnect(0) // a connect still in progress must not connect later, unseen
		return nil, fmt.Errorf("connect %s to %s: %v", id, url, t.Error())
	}
	return c, nil
}
