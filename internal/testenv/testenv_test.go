package testenv_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/internal/testenv"
)

// ping speaks just enough RESP to prove a real Redis answers.
func ping(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	fmt.Fprint(c, "*1\r\n$4\r\nPING\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return strings.TrimSpace(line)
}

func TestRedisProcessStartsAndRestarts(t *testing.T) {
	p := testenv.RedisProcess(t)
	if got := ping(t, p.Addr); got != "+PONG" {
		t.Fatalf("PING = %q", got)
	}
	p.Restart()
	if got := ping(t, p.Addr); got != "+PONG" {
		t.Fatalf("PING after restart = %q", got)
	}
	p.Stop()
	if _, err := net.DialTimeout("tcp", p.Addr, 200*time.Millisecond); err == nil {
		t.Fatal("redis still listening after Stop")
	}
}

func TestMosquittoProcessAcceptsConnections(t *testing.T) {
	p := testenv.MosquittoProcess(t, "")
	c, err := net.DialTimeout("tcp", p.Addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	// MQTT 3.1.1 CONNECT, clean session, keepalive 10, client id "t".
	connect := []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 10, 0, 1, 't'}
	if _, err := c.Write(connect); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("read CONNACK: %v", err)
	}
	if buf[0] != 0x20 || buf[3] != 0 {
		t.Fatalf("CONNACK = % x, want accepted", buf)
	}
	c.Close()
	if !strings.HasPrefix(p.URL, "tcp://127.0.0.1:") {
		t.Fatalf("URL = %q", p.URL)
	}
}
