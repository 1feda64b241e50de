package charger_test

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chargeflow/chargeflow/charger"
)

func TestTopics(t *testing.T) {
	tp := charger.Topics{Prefix: "ev/v1"}
	if got := tp.Up("CP1", charger.KindMeter); got != "ev/v1/CP1/up/meter" {
		t.Fatal(got)
	}
	cases := []struct {
		topic string
		cp    string
		kind  charger.Kind
		ok    bool
	}{
		{"ev/v1/CP1/state", "CP1", charger.KindState, true},
		{"ev/v1/CP1/up/txn", "CP1", charger.KindTxn, true},
		{"ev/v1/CP1/down/cmd", "CP1", charger.KindCmd, true},
		{"ev/v1/CP1/down/txnack", "CP1", charger.KindTxnAck, true},
		{"ev/v1/CP1/up/state", "", "", false},
		{"ev/v1/CP1/up/txn/x", "", "", false},
		{"ev/v1/CP 1/state", "", "", false},
		{"ev/v2/CP1/state", "", "", false},
		{"ev/v1/CP1", "", "", false},
	}
	for _, c := range cases {
		cp, k, ok := tp.Parse(c.topic)
		if cp != c.cp || k != c.kind || ok != c.ok {
			t.Errorf("Parse(%q) = %q %q %v", c.topic, cp, k, ok)
		}
	}
	if !charger.ValidChargerID("SIM-001_a") || charger.ValidChargerID("") || charger.ValidChargerID("a/b") ||
		charger.ValidChargerID(strings.Repeat("a", 65)) {
		t.Fatal("ValidChargerID")
	}
}

func TestDecode(t *testing.T) {
	ok := []struct {
		kind    charger.Kind
		payload string
	}{
		{charger.KindState, `{"online":true,"boot_id":"b1","model":"m","fw":"1","connectors":[{"id":1,"status":"available"}],"ts":"2026-11-26T10:15:30+08:00"}`},
		{charger.KindState, `{"online":false,"reason":"lwt"}`},
		{charger.KindStatus, `{"connector":1,"status":"charging","error":"","ts":"2026-11-26T10:15:30+08:00","extra":1}`},
		{charger.KindMeter, `{"session_id":"s","connector":1,"seq":7,"ts":"2026-11-26T10:15:30+08:00","energy_wh":123456,"power_w":7040}`},
		{charger.KindTxn, `{"event_id":"e","session_id":"s","connector":1,"type":"ended","ts":"2026-11-26T10:15:30+08:00","meter_wh":123000,"reason":"remote","offline":false}`},
		{charger.KindAck, `{"cmd_id":"c","result":"rejected","reason":"expired"}`},
		{charger.KindCmd, `{"cmd_id":"c","type":"start","session_id":"s","connector":1,"deadline":"2026-11-26T10:15:30+08:00","max_energy_wh":50000}`},
		{charger.KindTxnAck, `{"event_id":"e"}`},
	}
	for _, c := range ok {
		m, err := charger.Decode(c.kind, []byte(c.payload))
		if err != nil {
			t.Errorf("%s %s: %v", c.kind, c.payload, err)
			continue
		}
		if m.Kind() != c.kind {
			t.Errorf("kind %s != %s", m.Kind(), c.kind)
		}
		// Round trip: what we encode decodes to the same value.
		b, err := charger.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		if m2, err := charger.Decode(c.kind, b); err != nil || !sameMessage(m, m2) {
			t.Errorf("round trip %s: %v %v", b, m2, err)
		}
	}
	bad := []struct {
		kind    charger.Kind
		payload string
		reason  string
	}{
		{charger.KindMeter, `{"session_id":"s","connector":1,"seq":7,"ts":"2026-11-26T10:15:30+08:00"}`, "meter: energy_wh missing"},
		{charger.KindMeter, `{"session_id":"s","connector":1,"seq":7,"ts":"2026-11-26T10:15:30+08:00","energy_wh":"12"}`, "meter: energy_wh has the wrong type"},
		{charger.KindMeter, `{"session_id":"s","connector":1,"seq":7,"ts":"yesterday","energy_wh":1}`, "meter: timestamp is not RFC 3339 with an offset"},
		{charger.KindMeter, `{"session_id":"s","connector":1,"seq":7,"ts":"2026-11-26T10:15:30","energy_wh":1}`, "meter: timestamp is not RFC 3339 with an offset"},
		{charger.KindMeter, `{"session_id":"s","connector":1,"seq":7,"ts":"2026-11-26T10:15:30Z","energy_wh":-1}`, "meter: energy_wh negative"},
		{charger.KindTxn, `{"event_id":"e","session_id":"s","connector":1,"type":"paused","ts":"2026-11-26T10:15:30+08:00","meter_wh":1}`, "txn: type must be started|ended"},
		{charger.KindTxn, `{"event_id":"e","session_id":"s","connector":1,"type":"ended","ts":"2026-11-26T10:15:30+08:00","meter_wh":1}`, "txn: ended without reason"},
		{charger.KindAck, `{"cmd_id":"c","result":"rejected","reason":"tired"}`, `ack: unknown rejected reason "tired"`},
		{charger.KindState, `{"online":true}`, "state: boot_id missing"},
		{charger.KindState, `[1,2]`, "state: not a JSON object"},
		{charger.KindState, `null`, "state: not a JSON object"},
		{charger.KindStatus, `{"connector":0,"status":"charging","ts":"2026-11-26T10:15:30+08:00"}`, "status: connector must be ≥ 1"},
		{charger.KindCmd, `{"cmd_id":"c","type":"start","session_id":"s","connector":1}`, "cmd: start: deadline missing"},
		{charger.KindTxnAck, `{"event_id":null}`, "txnack: event_id missing"},
		{"bogus", `{}`, `unknown kind "bogus"`},
	}
	for _, c := range bad {
		_, err := charger.Decode(c.kind, []byte(c.payload))
		var ie *charger.InvalidError
		if !errors.As(err, &ie) || ie.Reason != c.reason {
			t.Errorf("Decode(%s, %s) = %v, want reason %q", c.kind, c.payload, err, c.reason)
		}
	}
}

func sameMessage(a, b charger.Message) bool {
	x, _ := charger.Encode(a)
	y, _ := charger.Encode(b)
	return string(x) == string(y)
}

// FuzzDecode: no input makes a decoder panic, every failure is an
// *InvalidError, and whatever decodes re-encodes and decodes to itself.
func FuzzDecode(f *testing.F) {
	kinds := []charger.Kind{charger.KindState, charger.KindStatus, charger.KindMeter, charger.KindTxn,
		charger.KindAck, charger.KindCmd, charger.KindTxnAck}
	f.Add(uint8(2), []byte(`{"session_id":"s","connector":1,"seq":7,"ts":"2026-11-26T10:15:30+08:00","energy_wh":123456,"power_w":7040}`))
	f.Add(uint8(3), []byte(`{"event_id":"e","session_id":"s","connector":1,"type":"started","ts":"2026-11-26T10:15:30+08:00","meter_wh":1}`))
	f.Add(uint8(0), []byte(`{"online":true,"boot_id":"b","connectors":[{"id":1,"status":"available"}]}`))
	f.Add(uint8(5), []byte(`{"cmd_id":"c","type":"start","session_id":"s","connector":1,"deadline":"2026-11-26T10:15:30+08:00"}`))
	f.Add(uint8(4), []byte(`{"cmd_id":"c","result":"accepted"}`))
	f.Add(uint8(1), []byte(`{"connector":1,"status":"x","ts":1}`))
	f.Fuzz(func(t *testing.T, k uint8, payload []byte) {
		kind := kinds[int(k)%len(kinds)]
		m, err := charger.Decode(kind, payload)
		if err != nil {
			var ie *charger.InvalidError
			if !errors.As(err, &ie) || ie.Reason == "" {
				t.Fatalf("error is not an *InvalidError with a reason: %v", err)
			}
			return
		}
		b, err := charger.Encode(m)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		m2, err := charger.Decode(kind, b)
		if err != nil || !sameMessage(m, m2) {
			t.Fatalf("round trip changed %v into %v (%v)", m, m2, err)
		}
	})
}

func TestPasswordHash(t *testing.T) {
	h, err := charger.HashPassword("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$7$") || !charger.CheckPassword(h, "s3cret") || charger.CheckPassword(h, "s3cret!") {
		t.Fatalf("hash %q", h)
	}
	for _, bad := range []string{"", "$7$", "$6$abc$def", "$7$x$AAAA$AAAA", "$7$101$!!$AAAA", "$7$999999999$AAAA$AAAA"} {
		if charger.CheckPassword(bad, "") {
			t.Errorf("malformed hash %q matched", bad)
		}
	}
	// A hash written by mosquitto_passwd itself verifies: the format is Mosquitto's.
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", file, "CP1", "from-mosquitto").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	line := readFile(t, file)
	_, hash, _ := strings.Cut(strings.TrimSpace(line), ":")
	if !charger.CheckPassword(hash, "from-mosquitto") || charger.CheckPassword(hash, "other") {
		t.Fatalf("mosquitto_passwd hash %q not verified", hash)
	}
}
