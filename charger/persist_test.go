package charger_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/internal/testenv"
)

// TestEmbeddedBrokerKeepsState: with a store file, the embedded broker
// keeps a charger's session across its own restart: a QoS 1 command queued
// while the charger was offline before the restart is delivered when it
// reconnects after it, and the restored retained `online` is not handed to
// the Handler as presence (only what a connected charger publishes is).
func TestEmbeddedBrokerKeepsState(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	store := filepath.Join(t.TempDir(), "mqtt.bolt")
	c := &creds{}
	c.add(t, "CP1", "pw-CP1")
	newBroker := func() *charger.EmbeddedBroker {
		b, err := charger.NewEmbeddedBroker(charger.EmbeddedConfig{ListenAddr: addr, Credentials: c, StorePath: store})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	topics := charger.Topics{}
	got := make(chan paho.Message, 16)
	connect := func() paho.Client {
		o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("CP1").SetUsername("CP1").SetPassword("pw-CP1").
			SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
			SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- m }) // before Connect: queued messages come first
		cl := paho.NewClient(o)
		if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("connect: %v", tok.Error())
		}
		return cl
	}

	first := newBroker()
	rec1 := &recorder{}
	startLink(t, first, rec1.handle)
	cl := connect()
	if tok := cl.Subscribe(topics.Down("CP1"), 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	state, _ := charger.Encode(charger.StateMsg{Online: true, BootID: "b1", TS: time.Now()})
	if tok := cl.Publish(topics.State("CP1"), 1, true, state); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish state: %v", tok.Error())
	}
	eventually(t, "the online state handed off", func() bool { return len(rec1.decoded("CP1", charger.KindState)) == 1 })
	cl.Disconnect(0) // offline; its session (clean session false) stays

	cmd := charger.Command{CmdID: "s1-start", Type: charger.CmdStart, SessionID: "s1", Connector: 1, Deadline: time.Now().Add(time.Hour)}
	if err := first.SendCommand(context.Background(), "CP1", cmd); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	second := newBroker()
	rec2 := &recorder{}
	startLink(t, second, rec2.handle)
	cl = connect()
	defer cl.Disconnect(0)
	select {
	case m := <-got:
		d, err := charger.Decode(charger.KindCmd, m.Payload())
		if err != nil || m.Topic() != topics.Cmd("CP1") || d.(charger.Command).CmdID != cmd.CmdID {
			t.Fatalf("after the restart got %s %s (%v)", m.Topic(), m.Payload(), err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the command queued before the restart was not delivered after it")
	}
	if n := rec2.count(); n != 0 {
		t.Fatalf("the restarted broker handed %d restored messages to the handler (presence must come from a connection)", n)
	}
}
