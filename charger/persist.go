package charger

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
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
	// NoSync: a commit is written to the file but not flushed to the disk,
	// so it survives a crash of the process (kill -9: the kernel has the
	// pages) but maybe not of the machine, much as Mosquitto, which saves its
	// persistence file only every autosave_interval. What a lost write can
	// cost is a command, and unanswered commands are sent again
	// (docs/protocol.md); with a flush per write the broker took ~30× less
	// traffic (chargeflow bench, mqtt.embedded.burst).
	err := s.AddHook(&boltHook{Hook: new(bolt.Hook)}, &bolt.Options{Path: path, Bucket: "mochi",
		Options: &bbolt.Options{Timeout: storeOpenTimeout, NoSync: true}})
	if err != nil {
		return fmt.Errorf("embedded broker: store %s: %w", path, err)
	}
	return nil
}

// boltHook is mochi's bolt hook with two repairs.
//
// v2.7.9 does not write an in-flight message's packet id (its badger and
// pebble hooks do), so a restored message would go out with id 0, which
// clients drop. The id is the end of the message's key
// ("IFM_<client>:<packet id>").
//
// mochi also reports the PUBACK of every QoS 1 publish a client sends as an
// in-flight message, stored and deleted at once: two writes per charger
// message for nothing. Only messages the broker sends are kept (writes of
// Publish packets, and the completion of those).
type boltHook struct {
	*bolt.Hook
	out sync.Map // "<client>\x00<packet id>" of the messages sent and not yet complete
}

func flightKey(cl *mqtt.Client, pk packets.Packet) string {
	return cl.ID + "\x00" + strconv.Itoa(int(pk.PacketID))
}

func (h *boltHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if pk.FixedHeader.Type != packets.Publish {
		return // the ack of a message received: answered already
	}
	h.out.Store(flightKey(cl, pk), struct{}{})
	h.Hook.OnQosPublish(cl, pk, sent, resends)
}

func (h *boltHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if _, ok := h.out.LoadAndDelete(flightKey(cl, pk)); ok {
		h.Hook.OnQosComplete(cl, pk)
	}
}

func (h *boltHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) { h.OnQosComplete(cl, pk) }

func (h *boltHook) StoredInflightMessages() ([]storage.Message, error) {
	msgs, err := h.Hook.StoredInflightMessages()
	for i := range msgs {
		if msgs[i].PacketID == 0 {
			if _, id, ok := cutLast(msgs[i].ID, ":"); ok {
				if n, perr := strconv.ParseUint(id, 10, 16); perr == nil {
					msgs[i].PacketID = uint16(n)
				}
			}
		}
		h.out.Store(msgs[i].Client+"\x00"+strconv.Itoa(int(msgs[i].PacketID)), struct{}{})
	}
	return msgs, err
}

// OnSysInfoTick writes nothing: the $SYS counters are not restored (below),
// and a write a second for them would be a write for nothing.
func (h *boltHook) OnSysInfoTick(*system.Info) {}

// StoredSysInfo restores no $SYS counters: they describe a broker's own
// life (and mochi's bolt hook logs an error for a new file that has none).
func (h *boltHook) StoredSysInfo() (storage.SystemInfo, error) { return storage.SystemInfo{}, nil }

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}
