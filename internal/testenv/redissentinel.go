package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The Sentinel timings of the set-ups testenv starts: a primary silent for
// SentinelDownAfter is subjectively down; two sentinels agreeing (quorum 2)
// start a failover, which may take up to SentinelFailoverTimeout before
// another one is tried. Short, so failover tests are quick.
const (
	SentinelMaster          = "chargeflow"
	SentinelDownAfter       = 1500 * time.Millisecond
	SentinelFailoverTimeout = 5 * time.Second
)

// RedisSentinel is a primary, a replica and three sentinels monitoring them
// (quorum 2), on loopback ports, started by testenv.
type RedisSentinel struct {
	// URL is the set-up for the store: the sentinels and the master name
	// (redis://s1?master_name=…&addr=s2&addr=s3).
	URL string
	// MasterName is the name the sentinels monitor.
	MasterName string
	// Servers are the two data servers (the first started as the primary;
	// which one is primary changes with failovers, see Primary).
	Servers []*Process
	// Sentinels are the three sentinels.
	Sentinels []*Process
}

// RedisSentinelURL returns the URL of a Sentinel set-up for the tests: the
// one CHARGEFLOW_TEST_REDIS_SENTINEL_URL names, else the package's shared
// private one (SharedRedisSentinel). Tests sharing it must prefix their keys
// (Namespace).
func RedisSentinelURL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(EnvRedisSentinelURL); u != "" {
		return u
	}
	return SharedRedisSentinel(t).URL
}

// SharedRedisSentinel returns the private Sentinel set-up shared by this
// test binary, starting it at the first call. Its servers must not be
// killed (use NewRedisSentinel for that). TestMain stops it.
func SharedRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	return sharedStart(t, "redis sentinel", &shared.sentinel, startSentinel)
}

// NewRedisSentinel starts a Sentinel set-up for this test only; the test's
// cleanup stops it.
func NewRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	cl := &cleanups{}
	t.Cleanup(cl.run)
	s, err := startSentinel(cl)
	if err != nil {
		t.Fatalf("testenv: redis sentinel: %v", err)
	}
	return s
}

func startSentinel(cl *cleanups) (*RedisSentinel, error) {
	bin, err := findBinary("redis-server")
	if err != nil {
		return nil, err
	}
	s := &RedisSentinel{MasterName: SentinelMaster}
	for i := range 2 {
		var replicaOf []string
		if i > 0 {
			host, port, _ := net.SplitHostPort(s.Servers[0].Addr)
			replicaOf = []string{"--replicaof", host, port}
		}
		p, err := startServer(cl, fmt.Sprintf("redis-sentinel-data-%d", i), func(port int, dir string) []string {
			return append(redisArgs(bin, port, dir), replicaOf...)
		})
		if err != nil {
			return nil, err
		}
		s.Servers = append(s.Servers, p)
	}
	host, port, _ := net.SplitHostPort(s.Servers[0].Addr)
	for i := range 3 {
		p, err := startServer(cl, fmt.Sprintf("redis-sentinel-%d", i), func(sport int, dir string) []string {
			m := s.MasterName
			conf := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\n", sport, dir) +
				"sentinel resolve-hostnames no\n" +
				fmt.Sprintf("sentinel monitor %s %s %s 2\n", m, host, port) +
				fmt.Sprintf("sentinel down-after-milliseconds %s %d\n", m, SentinelDownAfter.Milliseconds()) +
				fmt.Sprintf("sentinel failover-timeout %s %d\n", m, SentinelFailoverTimeout.Milliseconds()) +
				fmt.Sprintf("sentinel parallel-syncs %s 1\n", m)
			path := filepath.Join(dir, "sentinel.conf")
			if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
				return nil
			}
			return []string{bin, path, "--sentinel"}
		})
		if err != nil {
			return nil, err
		}
		s.Sentinels = append(s.Sentinels, p)
	}
	s.URL = "redis://" + s.Sentinels[0].Addr + "?master_name=" + s.MasterName +
		"&addr=" + s.Sentinels[1].Addr + "&addr=" + s.Sentinels[2].Addr
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.waitHealthy(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	return s, nil
}

// startServer starts one server on a free port in a directory of its own;
// argv returns nil when it cannot write what it needs.
func startServer(cl *cleanups, name string, argv func(port int, dir string) []string) (*Process, error) {
	dir, err := cl.tempDir("chargeflow-" + name + "-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		args := argv(port, dir)
		if args == nil {
			return nil, fmt.Errorf("%s: cannot write its configuration in %s", name, dir)
		}
		p := &Process{Name: name, Addr: fmt.Sprintf("127.0.0.1:%d", port), URL: fmt.Sprintf("redis://127.0.0.1:%d", port),
			args: args, dir: dir}
		if lastErr = p.launch(); lastErr == nil {
			cl.add(p.Stop)
			return p, nil
		}
	}
	return nil, fmt.Errorf("start %s: %w", name, lastErr)
}

// Primary returns the data server the sentinels name as the primary now
// (asking each running sentinel until one answers).
func (s *RedisSentinel) Primary(t testing.TB) *Process {
	t.Helper()
	p, err := s.primary(t.Context())
	if err != nil {
		t.Fatalf("testenv: sentinel primary: %v", err)
	}
	return p
}

func (s *RedisSentinel) primary(ctx context.Context) (*Process, error) {
	var lastErr error = errors.New("no sentinel running")
	for _, sn := range s.Sentinels {
		if !sn.Running() {
			continue
		}
		v, err := do(ctx, sn.Addr, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.MasterName)
		if err != nil {
			lastErr = err
			continue
		}
		hp, _ := v.([]any)
		if len(hp) != 2 {
			lastErr = fmt.Errorf("sentinel %s: master reply %v", sn.Addr, v)
			continue
		}
		h, _ := hp[0].(string)
		p, _ := hp[1].(string)
		addr := net.JoinHostPort(h, p)
		for _, d := range s.Servers {
			if d.Addr == addr {
				return d, nil
			}
		}
		return nil, fmt.Errorf("sentinel %s names %s, not one of the servers", sn.Addr, addr)
	}
	return nil, lastErr
}

// Kill kills a data server with SIGKILL.
func (s *RedisSentinel) Kill(p *Process) { p.Stop() }

// WaitHealthy waits until every running sentinel names the same running
// primary, that server says it is the primary, every running sentinel knows
// the other running ones, and every running replica is in sync with it. It
// returns how long it waited.
func (s *RedisSentinel) WaitHealthy(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if err := s.waitHealthy(t.Context(), timeout); err != nil {
		t.Fatalf("testenv: sentinel set-up not healthy: %v", err)
	}
	return time.Since(start)
}

// WaitPrimaryOtherThan waits until the sentinels name a running primary
// other than old (a failover) and returns it with how long it waited.
func (s *RedisSentinel) WaitPrimaryOtherThan(t testing.TB, old *Process, timeout time.Duration) (*Process, time.Duration) {
	t.Helper()
	start := time.Now()
	var p *Process
	err := waitUntil(t.Context(), timeout, func(ctx context.Context) error {
		var err error
		if p, err = s.primary(ctx); err != nil {
			return err
		}
		if p == old || !p.Running() {
			return fmt.Errorf("primary still %s", p.Addr)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("testenv: no failover: %v", err)
	}
	return p, time.Since(start)
}

func (s *RedisSentinel) waitHealthy(ctx context.Context, timeout time.Duration) error {
	return waitUntil(ctx, timeout, s.healthy)
}

func (s *RedisSentinel) healthy(ctx context.Context) error {
	var primary *Process
	running := 0
	for _, sn := range s.Sentinels {
		if sn.Running() {
			running++
		}
	}
	for _, sn := range s.Sentinels {
		if !sn.Running() {
			continue
		}
		v, err := do(ctx, sn.Addr, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.MasterName)
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", sn.Addr, err)
		}
		hp, _ := v.([]any)
		if len(hp) != 2 {
			return fmt.Errorf("sentinel %s: master reply %v", sn.Addr, v)
		}
		h, _ := hp[0].(string)
		pt, _ := hp[1].(string)
		addr := net.JoinHostPort(h, pt)
		if primary == nil {
			for _, d := range s.Servers {
				if d.Addr == addr {
					primary = d
				}
			}
			if primary == nil || !primary.Running() {
				return fmt.Errorf("sentinels name %s as primary: not a running server", addr)
			}
		} else if primary.Addr != addr {
			return fmt.Errorf("sentinels disagree on the primary (%s, %s)", primary.Addr, addr)
		}
		peers, err := do(ctx, sn.Addr, "SENTINEL", "SENTINELS", s.MasterName)
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", sn.Addr, err)
		}
		if ps, _ := peers.([]any); len(ps) < running-1 {
			return fmt.Errorf("sentinel %s knows %d other sentinels, want %d", sn.Addr, len(ps), running-1)
		}
		if ok, err := doText(ctx, sn.Addr, "SENTINEL", "CKQUORUM", s.MasterName); err != nil {
			return fmt.Errorf("sentinel %s: ckquorum: %v %w", sn.Addr, ok, err)
		}
	}
	if primary == nil {
		return errors.New("no sentinel running")
	}
	repl, err := doText(ctx, primary.Addr, "INFO", "replication")
	if err != nil {
		return fmt.Errorf("primary %s: %w", primary.Addr, err)
	}
	if infoField(repl, "role") != "master" {
		return fmt.Errorf("primary %s says role:%s", primary.Addr, infoField(repl, "role"))
	}
	for _, d := range s.Servers {
		if d == primary || !d.Running() {
			continue
		}
		r, err := doText(ctx, d.Addr, "INFO", "replication")
		if err != nil {
			return fmt.Errorf("replica %s: %w", d.Addr, err)
		}
		_, pport, _ := net.SplitHostPort(primary.Addr)
		if infoField(r, "role") != "slave" || infoField(r, "master_port") != pport ||
			infoField(r, "master_link_status") != "up" || infoField(r, "master_sync_in_progress") != "0" {
			return fmt.Errorf("replica %s not in sync with %s (role %s, master port %s, link %s)", d.Addr, primary.Addr,
				infoField(r, "role"), infoField(r, "master_port"), infoField(r, "master_link_status"))
		}
	}
	return nil
}
