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

// abandonedByEarlierLife reports whether an in-flight record was claimed by
// an earlier process of this instance: instance ids are unique among running
// processes, so that process is gone (a crash), and waiting out
// InFlightTimeout would only keep the user's retry waiting (docs/operations.md).
func (e *Engine) abandonedByEarlierLife(body []byte) bool {
	owner, ok := strings.CutPrefix(string(body), "in-flight:")
	if !ok {
		return false
	}
	instance, boot, ok := strings.Cut(owner, "/")
	return ok && instance == e.cfg.InstanceID && boot != processBoot
}
