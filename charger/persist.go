package charger

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"go.etcd.io/bbolt"
)

// The embedded broker's persistence is mochi's bbolt storage hook, not code
// of ours: it writes client sessions, subscriptions, in-flight QoS 1
// messages and retained messages as they change, and restores them when
// the broker starts (docs/operations.md, "A restart of the embedded stack").
//
// What is restored never reaches the Handler: the Handler only sees what a
// connected charger publishes (OnPublish) and wills (OnWillSent). So a
// retained `online` restored from disk is not taken for presence: a charger
// is online again once it has connected and published its state
// (docs/protocol.md). A restored session whose charger reconnects with
// clean session false gets its queued commands and txn acks at once.

// storeOpenTimeout bounds the wait for the file's lock (another process
// holding it: two brokers on one data directory).
const storeOpenTimeout = 2 * time.Second

func (b *EmbeddedBroker) addStoreHook(s *mqtt.Server) error {
	path := b.cfg.StorePath
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("embedded broker: store directory: %w", err)
	}
	err := s.AddHook(boltHook{new(bolt.Hook)}, &bolt.Options{Path: path, Bucket: "mochi", Options: &bbolt.Options{Timeout: storeOpenTimeout}})
	if err != nil {
		return fmt.Errorf("embedded broker: store %s: %w", path, err)
	}
	return nil
}

// boltHook is mochi's bolt hook with one repair: v2.7.9 does not write an
// in-flight message's packet id (its badger and pebble hooks do), so a
// restored message would go out with id 0, which clients drop. The id is
// the end of the message's key ("IFM_<client>:<packet id>").
type boltHook struct{ *bolt.Hook }

func (h boltHook) StoredInflightMessages() ([]storage.Message, error) {
	msgs, err := h.Hook.StoredInflightMessages()
	for i := range msgs {
		if msgs[i].PacketID != 0 {
			continue
		}
		if _, id, ok := cutLast(msgs[i].ID, ":"); ok {
			if n, perr := strconv.ParseUint(id, 10, 16); perr == nil {
				msgs[i].PacketID = uint16(n)
			}
		}
	}
	return msgs, err
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}
