package charger_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/internal/testenv"
)

// The embedded broker's Close returns even with connections mochi does not
// list as clients: one that never sent its CONNECT (mochi reads it with no
// deadline) here, a connection taken over mid-connect in a reconnect storm
// in the field. mochi's Close waits for every client goroutine; the broker's
// own listener closes every connection it accepted, so they end.
func TestEmbeddedCloseWithSilentConnections(t *testing.T) {
	b, err := charger.NewEmbeddedBroker(charger.EmbeddedConfig{ListenAddr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		Credentials: &creds{}, ServiceUsername: serviceUser, ServicePassword: servicePass})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	startLink(t, b, rec.handle)
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	time.Sleep(100 * time.Millisecond) // let the broker accept them
	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return with silent connections open")
	}
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a silent connection is still open after Close")
		}
	}
}
