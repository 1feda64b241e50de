package redisstore_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/internal/testenv"
	"github.com/chargeflow/chargeflow/store"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
	"github.com/chargeflow/chargeflow/store/storetest"
)

// opener gives each subtest its own namespace on one Redis.
func opener(url string) func(t *testing.T) storetest.Opener {
	return func(t *testing.T) storetest.Opener {
		ns := testenv.Namespace(t)
		var cur *redisstore.Store
		return storetest.Opener{
			Open: func(t *testing.T, now func() time.Time) store.Store {
				s, err := redisstore.New(t.Context(), url, redisstore.Options{Prefix: ns, Now: now})
				if err != nil {
					t.Fatal(err)
				}
				cur = s
				return s
			},
			CorruptSession: func(t *testing.T, id string, raw []byte) {
				if err := cur.Client().HSet(t.Context(), cur.SessionKey(id), "d", raw).Err(); err != nil {
					t.Fatal(err)
				}
			},
		}
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, opener(testenv.Redis(t)))
}

func TestUnreachableIsRetryable(t *testing.T) {
	port := testenv.FreePort(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := redisstore.New(ctx, "redis://127.0.0.1:"+strconv.Itoa(port)+"/0?max_retries=-1&dial_timeout=200ms", redisstore.Options{})
	if !store.IsRetryable(err) {
		t.Fatalf("unreachable redis: %v", err)
	}
	if _, err := redisstore.New(ctx, "redis://x?cluster=maybe", redisstore.Options{}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad url: %v", err)
	}
}

// A closed store says so; a restarted Redis (script cache flushed) still
// runs the scripts (EVALSHA falls back to EVAL outside pipelines).
func TestClosedAndScriptCacheFlush(t *testing.T) {
	url := testenv.Redis(t)
	s, err := redisstore.New(t.Context(), url, redisstore.Options{Prefix: testenv.Namespace(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Client().ScriptFlush(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MarkProcessed(t.Context(), "txn", "e1", time.Minute); err != nil {
		t.Fatalf("after SCRIPT FLUSH: %v", err)
	}
	s.Close()
	s.Close()
	if _, err := s.GetSession(t.Context(), "x"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}
