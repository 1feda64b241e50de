package sim

import (
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net"
	"net/url"
	"time"

	"github.com/chargeflow/chargeflow/charger"
)

// reconnectJitter runs before each reconnection attempt (on paho's
// reconnect goroutine): a random delay of up to ReconnectJitter, cut short
// when the charger powers off.
func (c *Charger) reconnectJitter(p *power) {
	j := c.cfg.ReconnectJitter
	if j <= 0 {
		return
	}
	t := time.NewTimer(time.Duration(rand.Int64N(int64(j) + 1)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-p.stop:
	}
}

// Unreachable cuts the charger's way to the broker while on: every
// connection attempt fails, so a charger whose connection dropped (a
// broker restart) keeps retrying with its back-off until it is off again.
// An established connection is not cut (Kill the charger or stop the
// broker for that).
func (c *Charger) Unreachable(on bool) { c.unreachable.Store(on) }

// dial opens the TCP (or TLS) connection and remembers it, so that Kill can
// cut it without an MQTT DISCONNECT.
func (c *Charger) dial(p *power, u *url.URL) (net.Conn, error) {
	if p.killed.Load() {
		return nil, errors.New("sim: charger is dead")
	}
	if c.unreachable.Load() {
		return nil, errors.New("sim: broker unreachable")
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	var conn net.Conn
	var err error
	switch u.Scheme {
	case "ssl", "tls", "mqtts", "tcps":
		conn, err = tls.DialWithDialer(&d, "tcp", u.Host, c.cfg.TLSConfig)
	default:
		conn, err = d.Dial("tcp", u.Host)
	}
	if err != nil {
		if prev := p.dialErr.Swap(&err); prev == nil || (*prev).Error() != err.Error() {
			c.log.Warn("sim: cannot connect to the broker (retrying)", "url", u.Redacted(), "err", err)
		}
		if charger.IsCertificateError(err) {
			p.refuseOnce.Do(func() { close(p.certRefused) })
		}
		return nil, err
	}
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if p.killed.Load() {
		conn.Close()
		return nil, errors.New("sim: charger is dead")
	}
	p.conn = conn
	return &killableConn{Conn: conn, p: p}, nil
}

// killableConn fails every write once the charger is killed, so that the
// DISCONNECT paho sends while stopping never reaches the broker: to the
// broker the connection just drops, and the will fires. (Closing the socket
// under paho instead would start its reconnect loop, whose back-off sleep
// outlives Disconnect.)
type killableConn struct {
	net.Conn
	p *power
}

func (k *killableConn) Write(b []byte) (int, error) {
	if k.p.killed.Load() {
		return 0, net.ErrClosed
	}
	return k.Conn.Write(b)
}
