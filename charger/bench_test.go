package charger_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/chargeflow/chargeflow/charger"
)

// BenchmarkLinkThroughput measures messages per second from chargers
// through each link to the Handler (QoS 1, acked after the handler), and in
// the same run the broker's raw publish→subscribe rate to a plain paho
// subscriber (QoS 1, auto-ack), reporting both and their ratio.
func BenchmarkLinkThroughput(b *testing.B) {
	for _, name := range []string{"mosquitto", "embedded"} {
		b.Run(name, func(b *testing.B) {
			var env *broker
			if name == "mosquitto" {
				env = mosquittoBroker(b)
			} else {
				env = embeddedBroker(b)
			}
			const publishers = 4
			topics := charger.Topics{Prefix: env.prefix}
			var counting atomic.Bool
			var got atomic.Int64
			handler := func(context.Context, charger.Inbound) error {
				if counting.Load() {
					got.Add(1)
				}
				return nil
			}
			var link charger.Link
			if env.creds != nil { // the embedded link is the broker: start it first
				link = env.newLink(b, "bench")
				startLink(b, link, handler)
			}
			var pubs []paho.Client
			for i := range publishers {
				id := fmt.Sprintf("BENCH-%d", i)
				c, err := rawClient(b, env.url, id, id, env.register(b, id), true)
				if err != nil {
					b.Fatal(err)
				}
				pubs = append(pubs, c)
			}
			payload, _ := charger.Encode(charger.MeterMsg{SessionID: "s", Connector: 1, Seq: 1, TS: time.Now(), EnergyWh: 1})
			n := max(b.N, publishers)
			run := func() time.Duration {
				got.Store(0)
				counting.Store(true)
				defer counting.Store(false)
				start := time.Now()
				done := make(chan struct{}, publishers)
				for i, c := range pubs {
					go func() {
						var last paho.Token
						for range n / publishers {
							last = c.Publish(topics.Up(fmt.Sprintf("BENCH-%d", i), charger.KindMeter), 1, false, payload)
						}
						last.WaitTimeout(time.Minute)
						done <- struct{}{}
					}()
				}
				for range publishers {
					<-done
				}
				want := int64(n / publishers * publishers)
				deadline := time.Now().Add(2 * time.Minute)
				for got.Load() < want && time.Now().Before(deadline) {
					time.Sleep(100 * time.Microsecond)
				}
				if got.Load() < want {
					b.Fatalf("received %d of %d", got.Load(), want)
				}
				return time.Since(start)
			}

			b.ResetTimer()
			// Baseline: a raw subscriber on the same broker.
			user, pw := "", ""
			if env.creds != nil {
				user, pw = serviceUser, servicePass
			}
			raw, err := rawClient(b, env.url, "bench-raw-"+name, user, pw, true)
			if err != nil {
				b.Fatal(err)
			}
			tok := raw.Subscribe(topics.UpFilter(), 1, func(paho.Client, paho.Message) {
				if counting.Load() {
					got.Add(1)
				}
			})
			if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				b.Fatal(tok.Error())
			}
			rawTime := run()
			raw.Disconnect(0)

			if link == nil {
				link = env.newLink(b, "bench")
				startLink(b, link, handler)
			}
			linkTime := run()
			b.StopTimer()

			rawRate := float64(n) / rawTime.Seconds()
			linkRate := float64(n) / linkTime.Seconds()
			b.ReportMetric(linkRate, "msgs/s")
			b.ReportMetric(rawRate, "raw_msgs/s")
			b.ReportMetric(linkRate/rawRate, "ratio")
			for _, c := range pubs {
				c.Disconnect(0)
			}
		})
	}
}
