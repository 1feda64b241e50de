package redisstore

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// The kinds of Redis errors, for metrics (chargeflow_store_errors_total,
// docs/metrics.md) and logs. During a failover a client sees, in about this
// order: connection (the primary is gone) or timeout (it hangs), then
// cluster_down (the cluster noticed: CLUSTERDOWN, or MASTERDOWN from a
// replica that lost its primary), readonly (a write reached a demoted
// primary) and moved (the client follows the slots to the promoted replica).
const (
	KindMoved       = "moved"        // MOVED, ASK or TRYAGAIN: the slot is served elsewhere, or being moved
	KindReadOnly    = "readonly"     // READONLY: a write reached a replica
	KindClusterDown = "cluster_down" // CLUSTERDOWN, MASTERDOWN: no primary serves that data now
	KindLoading     = "loading"      // LOADING: a restarted server is loading its data
	KindNoReplicas  = "noreplicas"   // NOREPLICAS (fewer replicas than min-replicas-to-write), or a durability WAIT no replica answered in time
	KindTimeout     = "timeout"      // no answer in time (a read or dial timeout, a deadline, no free connection)
	KindConnection  = "connection"   // refused, reset, closed by the server
	KindOther       = "other"        // anything else Redis or the client said
)

// ErrorKinds lists every kind ErrorKind returns, in a fixed order.
var ErrorKinds = []string{KindMoved, KindReadOnly, KindClusterDown, KindLoading, KindNoReplicas, KindTimeout,
	KindConnection, KindOther}

// ErrorKind classifies an error of the Redis client, as returned by go-redis
// or by this store (which wraps them). It returns "" for what is not a
// failure of Redis: nil, redis.Nil (no such key), a cancelled context, a
// closed client (the store is shutting down), NOSCRIPT (a server that lost
// its script cache: the store loads the script again at once) and a server
// refusing the optional CLIENT subcommands go-redis sends on every new
// connection (SETINFO before Redis 7.2, MAINT_NOTIFICATIONS outside Redis
// Enterprise: the client carries on without).
func ErrorKind(err error) string {
	switch {
	case err == nil, errors.Is(err, redis.Nil), errors.Is(err, context.Canceled), errors.Is(err, redis.ErrClosed),
		redis.HasErrorPrefix(err, "NOSCRIPT"), redis.HasErrorPrefix(err, "unknown subcommand 'setinfo'"),
		redis.HasErrorPrefix(err, "unknown subcommand 'maint_notifications'"):
		return ""
	case isMovedOrAsk(err), redis.IsTryAgainError(err):
		return KindMoved
	case redis.IsReadOnlyError(err):
		return KindReadOnly
	case redis.IsClusterDownError(err), redis.IsMasterDownError(err):
		return KindClusterDown
	case redis.IsLoadingError(err):
		return KindLoading
	case redis.IsNoReplicasError(err), errors.Is(err, errNoReplica):
		return KindNoReplicas
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, redis.ErrPoolTimeout), isNetTimeout(err):
		return KindTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, redis.ErrPoolExhausted),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, net.ErrClosed), isNetError(err):
		return KindConnection
	}
	return KindOther
}

func isMovedOrAsk(err error) bool {
	if _, ok := redis.IsMovedError(err); ok {
		return true
	}
	_, ok := redis.IsAskError(err)
	return ok
}

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}
