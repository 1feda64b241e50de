package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Env names that point tests at an already running Redis Cluster or
// Sentinel set-up instead of the private ones testenv starts. A cluster URL
// names seed nodes (redis://host:port?addr=host:port&addr=…); a Sentinel URL
// names the sentinels and the master
// (redis://host:port?master_name=name&addr=host:port&addr=…). Tests that kill
// nodes (failover tests) always start their own.
const (
	EnvRedisClusterURL  = "CHARGEFLOW_TEST_REDIS_CLUSTER_URL"
	EnvRedisSentinelURL = "CHARGEFLOW_TEST_REDIS_SENTINEL_URL"
)

// Shared servers live as long as the test binary: a package's tests start
// one Redis Cluster and one Sentinel set-up at the first call, and the
// package's TestMain stops them (StopShared) after m.Run. They are also
// killed if the test binary dies (the processes are started with a parent
// death signal, see procattr_linux.go).
var shared struct {
	mu       sync.Mutex
	cluster  *RedisCluster
	sentinel *RedisSentinel
	err      map[string]error
	stops    []func()
}

// StopShared stops every shared server started by this test binary. Call it
// from TestMain after m.Run (and before a goroutine leak check: each server
// has a goroutine waiting for it). It is safe to call when nothing was
// started, and more than once.
func StopShared() {
	shared.mu.Lock()
	stops := shared.stops
	shared.stops, shared.cluster, shared.sentinel = nil, nil, nil
	shared.mu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
}

// Main runs the tests, stops the shared servers and exits; check, when not
// nil, runs after them when the tests passed (a goroutine leak check, e.g.
// goleak.Find) and fails the run if it returns an error.
func Main(m *testing.M, check func() error) {
	code := m.Run()
	StopShared()
	if code == 0 && check != nil {
		if err := check(); err != nil {
			fmt.Fprintln(os.Stderr, "testenv: after the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// sharedStart returns the shared server of one kind, starting it at the
// first call; a failed start is remembered, so every test reports it.
func sharedStart[T any](t testing.TB, kind string, cur *T, start func(cleanup *cleanups) (T, error)) T {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	var zero T
	if err := shared.err[kind]; err != nil {
		t.Fatalf("testenv: shared %s: %v", kind, err)
	}
	if any(*cur) != any(zero) {
		return *cur
	}
	cl := &cleanups{}
	v, err := start(cl)
	if err != nil {
		cl.run()
		if shared.err == nil {
			shared.err = map[string]error{}
		}
		shared.err[kind] = err
		t.Fatalf("testenv: shared %s: %v", kind, err)
	}
	*cur = v
	shared.stops = append(shared.stops, cl.run)
	return v
}

// cleanups collects stop functions for servers that outlive one test.
type cleanups struct {
	mu sync.Mutex
	fs []func()
}

func (c *cleanups) add(f func()) { c.mu.Lock(); c.fs = append(c.fs, f); c.mu.Unlock() }

func (c *cleanups) run() {
	c.mu.Lock()
	fs := c.fs
	c.fs = nil
	c.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// tempDir makes a directory removed by the cleanups.
func (c *cleanups) tempDir(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	c.add(func() { _ = os.RemoveAll(dir) })
	return dir, nil
}

// freePort is FreePort without a test.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// relaunch starts a stopped process again on its port and directory
// (Restart without a test, for shared servers).
func (p *Process) relaunch() error {
	p.Stop()
	var err error
	for range 50 { // the port may linger briefly
		if err = p.launch(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("restart %s: %w", p.Name, err)
}

// Running reports whether the process is up (started and not stopped).
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !p.stopped
}

// node is a plain client of one Redis server (no retries, short timeouts)
// for set-up and inspection.
func node(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, PoolSize: 2})
}

// do runs one command on one server.
func do(ctx context.Context, addr string, args ...any) (any, error) {
	c := node(addr)
	defer c.Close()
	return c.Do(ctx, args...).Result()
}

// doText runs one command whose reply is text.
func doText(ctx context.Context, addr string, args ...any) (string, error) {
	v, err := do(ctx, addr, args...)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%v: reply %T, want text", args, v)
	}
	return s, nil
}

// infoField reads "field:value" from an INFO or CLUSTER INFO reply.
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// waitUntil polls cond every 50 ms until it returns nil or the timeout
// passes; the error is cond's last.
func waitUntil(ctx context.Context, timeout time.Duration, cond func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := cond(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("not so after %s", timeout), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// redisArgs are the flags of every server testenv starts for a cluster or
// a Sentinel set-up: no persistence, replicas synced over the socket at
// once, DEBUG allowed from loopback (tests use DEBUG SLEEP to play a hung
// server).
func redisArgs(bin string, port int, dir string) []string {
	return []string{bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--protected-mode", "no", "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
		"--enable-debug-command", "local"}
}

// findBinary is lookPath without a test.
func findBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"} {
		if _, err := os.Stat(filepath.Join(d, name)); err == nil {
			return filepath.Join(d, name), nil
		}
	}
	return "", fmt.Errorf("%s is not installed (install it, e.g. apt-get install -y redis-server)", name)
}
