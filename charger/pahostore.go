package charger

import (
	"bytes"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// NewPahoStore is the message store of every paho client chargeflow makes
// (the link, the simulator, the bench's fleets): paho's ordered memory
// store, so that what was queued during a reconnect goes out in order, but
// keeping and handing out copies of PUBLISH packets.
//
// paho's own memory stores keep the very packet a Publish sends and hand
// that same packet to the resume after a reconnect, which sets its DUP flag
// while the connection's writer may still be encoding it for the first send:
// a data race inside paho (eclipse-paho/paho.mqtt.golang issue 703), seen
// under -race when a fleet publishes while it reconnects. A copy taken at Put
// (Publish stores the packet before it hands it to the writer) and another at
// Get leaves every packet with one goroutine at a time (docs/protocol.md §1).
func NewPahoStore() paho.Store { return copyStore{paho.NewOrderedMemoryStore()} }

type copyStore struct{ *paho.OrderedMemoryStore }

func (s copyStore) Put(key string, m packets.ControlPacket) {
	s.OrderedMemoryStore.Put(key, clonePacket(m))
}

func (s copyStore) Get(key string) packets.ControlPacket {
	return clonePacket(s.OrderedMemoryStore.Get(key))
}

// clonePacket copies a PUBLISH packet (header, topic, payload); other
// packets are never changed after they are stored and are kept as they are.
func clonePacket(m packets.ControlPacket) packets.ControlPacket {
	p, ok := m.(*packets.PublishPacket)
	if !ok || p == nil {
		return m
	}
	c := *p
	c.Payload = bytes.Clone(p.Payload)
	return &c
}
