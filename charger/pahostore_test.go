package charger

import (
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// The store never shares a PUBLISH packet with its caller: changing what
// Put was given, or what Get returned, changes nothing stored (paho's resume
// sets DUP on what Get returns while the writer may encode the original).
func TestPahoStoreKeepsCopies(t *testing.T) {
	s := NewPahoStore()
	s.Open()
	defer s.Close()
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName, p.Qos, p.MessageID, p.Payload = "ev/v1/cp-1/down/cmd", 1, 7, []byte(`{"a":1}`)
	s.Put("o.7", p)
	p.Dup, p.Payload[0] = true, 'X'

	got := s.Get("o.7").(*packets.PublishPacket)
	if got == p || got.Dup || string(got.Payload) != `{"a":1}` || got.TopicName != p.TopicName || got.MessageID != 7 || got.Qos != 1 {
		t.Fatalf("stored packet shares the caller's: %+v payload %q", got, got.Payload)
	}
	got.Dup, got.Payload[0] = true, 'Y'
	again := s.Get("o.7").(*packets.PublishPacket)
	if again == got || again.Dup || string(again.Payload) != `{"a":1}` {
		t.Fatalf("Get hands out the stored packet: %+v payload %q", again, again.Payload)
	}
	if keys := s.All(); len(keys) != 1 || keys[0] != "o.7" {
		t.Fatalf("All = %v", keys)
	}
	s.Del("o.7")
	if s.Get("o.7") != nil {
		t.Fatal("deleted packet still there")
	}
	sub := packets.NewControlPacket(packets.Subscribe)
	s.Put("o.8", sub)
	if s.Get("o.8") != sub {
		t.Fatal("a non-PUBLISH packet is kept as it is")
	}
}
