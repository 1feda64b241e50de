// Package testenv gives tests real infrastructure: a private Redis and a
// private Mosquitto, each started on a free loopback port and stopped when the
// test ends. When CHARGEFLOW_TEST_REDIS_URL / CHARGEFLOW_TEST_MQTT_URL are set,
// those servers are used instead and nothing is started. A Redis Cluster and
// a Sentinel set-up are shared by a package's tests (rediscluster.go,
// redissentinel.go, shared.go).
//
// Tests that share an externally provided Redis must not assume an empty
// database: use Namespace(t) as a key prefix so runs never collide.
package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Env names that point tests at already running servers.
const (
	EnvRedisURL = "CHARGEFLOW_TEST_REDIS_URL"
	EnvMQTTURL  = "CHARGEFLOW_TEST_MQTT_URL"
)

// Process is a server started for a test. Stop and Start may be used to
// simulate a crash or a restart on the same port; the test's cleanup stops it.
type Process struct {
	Name string
	Addr string // host:port
	URL  string // redis://… or tcp://…
	// TLSURL is the ssl://… URL of a Mosquitto's TLS listener
	// (MosquittoTLSProcess), empty otherwise.
	TLSURL string

	t       testing.TB
	args    []string
	dir     string
	mu      sync.Mutex
	cmd     *exec.Cmd
	logBuf  *bytes.Buffer
	exited  chan struct{}
	stopped bool
}

// Redis returns the URL of a Redis for this test only (or the external one).
func Redis(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(EnvRedisURL); u != "" {
		return u
	}
	return RedisProcess(t).URL
}

// RedisProcess starts a private redis-server (no persistence) and returns it.
func RedisProcess(t testing.TB) *Process {
	t.Helper()
	bin := lookPath(t, "redis-server")
	dir := t.TempDir()
	return start(t, "redis", func(port int) []string {
		return []string{bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--protected-mode", "no"}
	}, dir, "redis://127.0.0.1:%d/0")
}

// MQTT returns the URL of a Mosquitto for this test only (or the external one).
// The private broker allows anonymous clients.
func MQTT(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(EnvMQTTURL); u != "" {
		return u
	}
	return MosquittoProcess(t, "").URL
}

// MosquittoProcess starts a private mosquitto. extraConfig is appended to the
// generated config (which sets the listener, and allow_anonymous true unless
// extraConfig mentions allow_anonymous). Use "{{dir}}" in extraConfig for the
// process's private directory.
func MosquittoProcess(t testing.TB, extraConfig string) *Process {
	t.Helper()
	return mosquittoProcess(t, func(dir string) string { return strings.ReplaceAll(extraConfig, "{{dir}}", dir) })
}

// mosquittoProcess starts a private mosquitto whose extra configuration is
// made for each start attempt (a listener of its own may need a new port).
func mosquittoProcess(t testing.TB, extra func(dir string) string) *Process {
	t.Helper()
	bin := lookPath(t, "mosquitto")
	dir := t.TempDir()
	return start(t, "mosquitto", func(port int) []string {
		extraConfig := extra(dir)
		conf := fmt.Sprintf("listener %d 127.0.0.1\n", port)
		if !strings.Contains(extraConfig, "allow_anonymous") {
			conf += "allow_anonymous true\n"
		}
		if !strings.Contains(extraConfig, "persistence ") {
			conf += "persistence false\n"
		}
		// An unlimited inflight window: chargeflow acknowledges a QoS 1
		// message only once it is stored, and with Mosquitto's default
		// window of 20 a client's messages were seen reordered.
		conf += "max_queued_messages 100000\n"
		if !strings.Contains(extraConfig, "max_inflight_messages") {
			conf += "max_inflight_messages 0\n"
		}
		conf += extraConfig + "\n"
		path := filepath.Join(dir, "mosquitto.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatalf("testenv: write mosquitto config: %v", err)
		}
		return []string{bin, "-c", path}
	}, dir, "tcp://127.0.0.1:%d")
}

func lookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, d := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"} {
			if _, e := os.Stat(filepath.Join(d, name)); e == nil {
				return filepath.Join(d, name)
			}
		}
		t.Fatalf("testenv: %s is not installed (install it, e.g. apt-get install -y %s, or set %s/%s): %v",
			name, map[string]string{"redis-server": "redis-server", "mosquitto": "mosquitto"}[name], EnvRedisURL, EnvMQTTURL, err)
	}
	return p
}

func start(t testing.TB, name string, argv func(port int) []string, dir, urlFormat string) *Process {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port := FreePort(t)
		p := &Process{Name: name, Addr: fmt.Sprintf("127.0.0.1:%d", port), URL: fmt.Sprintf(urlFormat, port),
			t: t, args: argv(port), dir: dir}
		if err := p.launch(); err != nil {
			lastErr = err
			continue
		}
		t.Cleanup(p.Stop)
		return p
	}
	t.Fatalf("testenv: start %s: %v", name, lastErr)
	return nil
}

func (p *Process) launch() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := exec.Command(p.args[0], p.args[1:]...)
	p.logBuf = &bytes.Buffer{}
	cmd.Stdout = p.logBuf
	cmd.Stderr = p.logBuf
	cmd.Dir = p.dir
	cmd.SysProcAttr = childAttr() // procattr_linux.go
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			p.cmd = cmd
			p.stopped = false
			p.exited = exited
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited at start: %s", p.Name, p.logBuf.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("%s not listening on %s after 10s: %s", p.Name, p.Addr, p.logBuf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL: a crash, nothing flushed) and waits for it.
// Stopping a stopped process does nothing.
func (p *Process) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.stopped {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	p.stopped = true
}

// Restart stops the server and starts it again on the same port and directory.
func (p *Process) Restart() {
	p.t.Helper()
	p.Stop()
	var err error
	for i := 0; i < 50; i++ { // the port may linger briefly
		if err = p.launch(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("testenv: restart %s: %v", p.Name, err)
}

// Log returns what the server printed so far (for failure messages).
func (p *Process) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.logBuf == nil {
		return ""
	}
	return p.logBuf.String()
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Namespace returns a short random prefix unique to this test, for keys in a
// shared Redis or topics on a shared broker.
func Namespace(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:])
}
