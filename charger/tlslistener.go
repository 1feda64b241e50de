package charger

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// tlsListener is the embedded broker's listener, TLS or (config nil) plain
// TCP. mochi's own TCP listener can speak TLS too, but it leaves the
// handshake to the first read of the CONNECT packet, so a refused
// certificate shows up as a message-less warning, and a client that never
// finishes its handshake holds a goroutine for ever. Here the handshake is
// done first, bounded, and a failure is logged with the remote address and
// the reason. Both kinds keep every connection they accepted and close what
// is left on Close: mochi's Close closes only the clients it still lists,
// and waits for every client goroutine, so a connection it no longer lists
// (taken over by a later CONNECT with the same client id while it was still
// being set up, as in a reconnect storm) made the broker's Close wait for
// ever (docs/operations.md "Reconnect storms").
type tlsListener struct {
	id, addr  string
	config    *tls.Config
	handshake time.Duration
	log       *slog.Logger

	mu     sync.Mutex // guards ln, closed, conns
	ln     net.Listener
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup // one per connection goroutine
	ctx    context.Context
	cancel context.CancelFunc
}

var _ listeners.Listener = (*tlsListener)(nil)

func newTLSListener(id, addr string, config *tls.Config, handshake time.Duration, log *slog.Logger) *tlsListener {
	ctx, cancel := context.WithCancel(context.Background())
	return &tlsListener{id: id, addr: addr, config: config, handshake: handshake, log: log, ctx: ctx, cancel: cancel,
		conns: map[net.Conn]struct{}{}}
}

func (l *tlsListener) ID() string { return l.id }
func (l *tlsListener) Protocol() string {
	if l.config == nil {
		return "tcp"
	}
	return "tls"
}

func (l *tlsListener) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Init binds the address (a taken port fails here, from AddListener).
func (l *tlsListener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	return nil
}

// Serve accepts until Close; each connection is handed to mochi once its
// handshake succeeded.
func (l *tlsListener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	ln := l.ln
	l.mu.Unlock()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			conn.Close()
			return
		}
		l.conns[conn] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			defer func() { l.mu.Lock(); delete(l.conns, conn); l.mu.Unlock(); conn.Close() }()
			if l.config == nil {
				if err := establish(l.id, conn); err != nil {
					l.log.Debug("mqtt connection ended", "remote", conn.RemoteAddr().String(), "err", err)
				}
				return
			}
			tc := tls.Server(conn, l.config)
			ctx, cancel := context.WithTimeout(l.ctx, l.handshake)
			err := tc.HandshakeContext(ctx)
			cancel()
			if err != nil {
				l.log.Warn("mqtt tls handshake failed", "remote", conn.RemoteAddr().String(), "err", err)
				return
			}
			if err := establish(l.id, tc); err != nil {
				l.log.Debug("mqtt tls connection ended", "remote", conn.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// Close stops accepting, ends handshakes in progress, has mochi close the
// listener's clients, closes what is left and waits for every connection
// goroutine.
func (l *tlsListener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	ln := l.ln
	l.mu.Unlock()
	l.cancel()
	if ln != nil {
		_ = ln.Close()
	}
	closeClients(l.id)
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}
