package sim

import (
	"math/rand/v2"
	"time"
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
