package charger_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/charger"
)

// TestServiceAccountRelays: what chargeflow's own account publishes on a
// charger's state or up topic reaches the Handler as that charger's message
// (a relay carrying several chargers on one connection, as the scale bench's
// multiplexed chargers do), on the embedded broker as on an external one;
// what it publishes on a charger's down topic (a command) does not.
func TestServiceAccountRelays(t *testing.T) {
	for name, mk := range brokers() {
		t.Run(name, func(t *testing.T) {
			b := mk(t)
			topics := charger.Topics{Prefix: b.prefix}
			var mu sync.Mutex
			var got []charger.Inbound
			link := b.newLink(t, "relay")
			startLink(t, link, func(_ context.Context, in charger.Inbound) error {
				mu.Lock()
				got = append(got, in)
				mu.Unlock()
				return nil
			})
			svc, err := rawClient(t, b.url, "relay-svc-"+name, serviceUser, servicePass, true)
			if err != nil {
				t.Fatal(err)
			}
			cmd, err := charger.Encode(charger.Command{CmdID: "c1", Type: charger.CmdStop, SessionID: "s1", Connector: 1, Deadline: time.Now().Add(time.Minute)})
			if err != nil {
				t.Fatal(err)
			}
			mustPublish(t, svc, topics.Cmd("RELAY-A"), cmd)
			for _, cp := range []string{"RELAY-A", "RELAY-B"} {
				st, err := charger.Encode(charger.StatusMsg{Connector: 1, Status: charger.StatusAvailable, TS: time.Now()})
				if err != nil {
					t.Fatal(err)
				}
				mustPublish(t, svc, topics.Up(cp, charger.KindStatus), st)
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				mu.Lock()
				n := len(got)
				mu.Unlock()
				if n >= 2 || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // a command would have arrived by now too
			mu.Lock()
			defer mu.Unlock()
			seen := map[string]bool{}
			for _, in := range got {
				if in.Kind != charger.KindStatus {
					t.Errorf("handler got %s on %s, want only the status messages", in.Kind, in.Topic)
				}
				seen[in.ChargerID] = true
			}
			if !seen["RELAY-A"] || !seen["RELAY-B"] {
				t.Errorf("handler got %d messages for %v, want the status of RELAY-A and RELAY-B", len(got), seen)
			}
		})
	}
}
