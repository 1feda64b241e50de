package testenv

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Proxy forwards TCP connections to a target address. A test can cut it —
// from then on every byte it reads, either way, is dropped while the
// connections stay open, as a network that silently loses packets does — or
// point it at another target, which closes the connections it carries.
type Proxy struct {
	Addr string

	ln     net.Listener
	mu     sync.Mutex
	target string
	cut    bool
	conns  map[net.Conn]struct{}
	closed bool
}

// NewProxy listens on a free loopback port and forwards to target until the
// test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: proxy: %v", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Cut drops everything from now on; the connections stay open.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
}

// Retarget sends new connections to target, uncut, and closes the current ones.
func (p *Proxy) Retarget(target string) {
	p.mu.Lock()
	p.target, p.cut = target, false
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
	p.mu.Unlock()
}

// Close stops the proxy and closes its connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
	p.mu.Unlock()
	p.ln.Close()
}

func (p *Proxy) isCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

// track registers conns, or reports false (and closes them) when closed.
func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *Proxy) handle(c net.Conn) {
	p.mu.Lock()
	target, cut := p.target, p.cut
	p.mu.Unlock()
	if cut { // a connection made while cut goes nowhere
		if p.track(c) {
			p.pipe(nil, c)
		}
		return
	}
	u, err := net.DialTimeout("tcp", target, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(c, u) {
		return
	}
	go p.pipe(u, c)
	p.pipe(c, u)
}

func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && dst != nil && !p.isCut() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	src.Close()
	if dst != nil {
		dst.Close()
	}
}

// ReplicatedRedis is a primary with one replica, both private, wired so a
// test can play a failover that loses writes: the replica replicates
// through Link, and clients reach the primary through Front (URL).
//
//   - Sync waits until the replica holds everything written so far.
//   - Cut cuts the replication link: the primary keeps counting its replica
//     as connected, but nothing reaches it any more, and no WAIT is
//     answered.
//   - Failover promotes the replica and points Front at it: clients now see
//     the data as it was at the cut, and every write since is lost, as when
//     Sentinel promotes a replica that lagged.
type ReplicatedRedis struct {
	Primary, Replica *Process
	Link, Front      *Proxy
	URL              string // redis://Front/0
}

// NewReplicatedRedis starts the pair and waits until the replica is in sync.
func NewReplicatedRedis(t testing.TB) *ReplicatedRedis {
	t.Helper()
	r := &ReplicatedRedis{Primary: RedisProcess(t), Replica: RedisProcess(t)}
	r.Link = NewProxy(t, r.Primary.Addr)
	r.Front = NewProxy(t, r.Primary.Addr)
	r.URL = "redis://" + r.Front.Addr + "/0"
	host, port, _ := net.SplitHostPort(r.Link.Addr)
	ctx := context.Background()
	if _, err := do(ctx, r.Replica.Addr, "REPLICAOF", host, port); err != nil {
		t.Fatalf("testenv: replicaof: %v", err)
	}
	if err := waitUntil(ctx, 20*time.Second, func(ctx context.Context) error {
		info, err := doText(ctx, r.Replica.Addr, "INFO", "replication")
		if err != nil {
			return err
		}
		if infoField(info, "master_link_status") != "up" {
			return errors.New("replica link not up")
		}
		return nil
	}); err != nil {
		t.Fatalf("testenv: replica: %v", err)
	}
	r.Sync(t)
	return r
}

// Sync waits until the replica has acknowledged every write the primary
// took so far (a write of its own, then WAIT on the same connection).
func (r *ReplicatedRedis) Sync(t testing.TB) {
	t.Helper()
	c := node(r.Primary.Addr)
	defer c.Close()
	ctx := context.Background()
	var n *redis.IntCmd
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "testenv:sync", time.Now().UnixNano(), time.Minute)
		n = redis.NewIntCmd(ctx, "wait", 1, 1500)
		return p.Process(ctx, n)
	})
	if err != nil || n.Val() < 1 {
		t.Fatalf("testenv: the replica did not catch up: %v (%d)", err, n.Val())
	}
}

// Cut cuts the replication link (see ReplicatedRedis).
func (r *ReplicatedRedis) Cut() { r.Link.Cut() }

// Failover promotes the replica and points Front at it.
func (r *ReplicatedRedis) Failover(t testing.TB) {
	t.Helper()
	if _, err := do(context.Background(), r.Replica.Addr, "REPLICAOF", "NO", "ONE"); err != nil {
		t.Fatalf("testenv: promote the replica: %v", err)
	}
	r.Front.Retarget(r.Replica.Addr)
}
