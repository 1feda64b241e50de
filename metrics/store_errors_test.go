package metrics

import (
	"slices"
	"strings"
	"testing"

	redisstore "github.com/chargeflow/chargeflow/store/redis"
)

// observingStore is a fakeStore that reports errors like the Redis adapter.
type observingStore struct {
	fakeStore
	fn func(kind string)
}

func (o *observingStore) ObserveErrors(fn func(kind string)) { o.fn = fn }

// WatchStore counts the errors of a store that reports them, by a bounded
// kind; every kind is exposed at zero before the first error.
func TestStoreErrors(t *testing.T) {
	m := New()
	st := &observingStore{}
	text := scrape(t, m)
	for _, k := range storeErrorKinds {
		if want := `chargeflow_store_errors_total{kind="` + k + `"} 0`; !strings.Contains(text, want+"\n") {
			t.Errorf("missing %q before any error", want)
		}
	}
	if err := m.WatchStore(st, 0, nil); err != nil {
		t.Fatal(err)
	}
	if st.fn == nil {
		t.Fatal("WatchStore did not observe the store's errors")
	}
	st.fn(redisstore.KindConnection)
	st.fn(redisstore.KindConnection)
	st.fn(redisstore.KindMoved)
	st.fn("node 10.0.0.7 exploded")
	text = scrape(t, m)
	for _, want := range []string{`kind="connection"} 2`, `kind="moved"} 1`, `kind="other"} 1`, `kind="readonly"} 0`} {
		if !strings.Contains(text, "chargeflow_store_errors_total{"+want+"\n") {
			t.Errorf("missing %q in\n%s", want, grep(text, "store_errors"))
		}
	}
	if strings.Contains(text, "exploded") {
		t.Error("an unknown kind leaked into the exposition")
	}
}

// The label set is the Redis adapter's set of kinds.
func TestStoreErrorKindsAreTheAdapters(t *testing.T) {
	if !slices.Equal(storeErrorKinds, redisstore.ErrorKinds) {
		t.Fatalf("metrics kinds %v, adapter kinds %v", storeErrorKinds, redisstore.ErrorKinds)
	}
}
