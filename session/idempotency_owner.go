package session

import (
	"strings"
	"time"
)

// processBoot tells this process apart from earlier lives of the same
// instance (a restart after a kill -9).
var processBoot = NewID(time.Now())

// inFlightOwner is what an Idempotency-Key's record keeps (in its Body,
// unused until the answer is stored) while its first request is served:
// the instance and the process serving it.
func (e *Engine) inFlightOwner() []byte {
	return []byte("in-flight:" + e.cfg.InstanceID + "/" + processBoot)
}

// unclaimedGrace is how long a key's record may stay in flight before the
// attempt claims it (one store write after its creation).
const unclaimedGrace = 5 * time.Second

// abandoned reports whether an in-flight record of age age was left by a
// process that died: claimed by an earlier process of this instance
// (instance ids are unique among running processes, so that process is
// gone), or never claimed at all (its process died before it sent anything
// to Pay Score under any id). Waiting out InFlightTimeout would only keep
// the user's retry waiting (docs/operations.md).
func (e *Engine) abandoned(body []byte, age time.Duration) bool {
	if len(body) == 0 {
		return age > unclaimedGrace
	}
	owner, ok := strings.CutPrefix(string(body), "in-flight:")
	if !ok {
		return false
	}
	instance, boot, ok := strings.Cut(owner, "/")
	return ok && instance == e.cfg.InstanceID && boot != processBoot
}
