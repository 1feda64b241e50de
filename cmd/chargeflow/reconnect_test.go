package main

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/chargeflow/chargeflow/internal/testenv"
)

// The reconnect window: the service or the broker restarted, and the
// chargers have not reconnected yet (they retry with back-off and jitter, as
// firmware does; here they are held unreachable until the commands of the
// window were published). A confirmation and a stop that arrive then must
// still reach the charger (docs/protocol.md, "Commands the charger has not
// answered"; docs/operations.md, "A restart of the embedded stack").

// windowTimeouts are long enough for a start or a stop to wait out the window.
var windowTimeouts = []string{"CHARGEFLOW_START_TIMEOUT", "20s", "CHARGEFLOW_STOP_TIMEOUT", "20s", "CHARGEFLOW_OFFLINE_GRACE", "60s"}

// window is a session waiting for its user's confirmation and one charging,
// on chargers that cannot reach the broker once their connection drops.
type window struct {
	s                   *stack
	waitCP, chargeCP    string
	waiting, charging   view
	startsOut, stopsOut float64 // the service's publishes before the window
}

func openWindow(s *stack, waitCP, chargeCP string) *window {
	s.t.Helper()
	if err := s.fleet.Charger(waitCP).Plug(1); err != nil {
		s.t.Fatal(err)
	}
	w := &window{s: s, waitCP: waitCP, chargeCP: chargeCP, waiting: s.create(waitCP, 5000), charging: s.charge(chargeCP, 5000)}
	s.fleet.Charger(waitCP).Unreachable(true)
	s.fleet.Charger(chargeCP).Unreachable(true)
	return w
}

// commandsOut is the service's count of command publishes the broker took.
func commandsOut(s *stack, typ string) float64 {
	return value(scrapeMetrics(s.t, s), "chargeflow_mqtt_messages_out_total", "kind", "cmd", "type", typ, "result", "ok")
}

// act confirms the waiting session and stops the charging one while the
// chargers are away (away: their connections dropped with the broker), and
// waits until the service has published both commands (to a broker that
// may have no session for them).
func (w *window) act(away bool) {
	s := w.s
	s.t.Helper()
	w.startsOut, w.stopsOut = commandsOut(s, "start"), commandsOut(s, "stop")
	if err := s.sb.Confirm(w.waiting.OutOrderNo); err != nil {
		s.t.Fatal(err)
	}
	s.mustDo("POST", "/v1/sessions/"+w.charging.ID+"/stop", appToken, nil, 202)
	s.waitFor("start and stop published", func() bool {
		return commandsOut(s, "start") > w.startsOut && commandsOut(s, "stop") > w.stopsOut
	})
	if away && (s.fleet.Charger(w.waitCP).Connected() || s.fleet.Charger(w.chargeCP).Connected()) {
		s.t.Fatal("a charger reconnected inside the window: the test does not test it")
	}
}

// close lets the chargers reconnect and checks the outcome: the start
// arrives after the confirmation (one cmd_id) and the session charges; the
// stop reaches the charger, which ends `remote`, with no stop_unconfirmed;
// both are paid, the ledger exact to the fen.
func (w *window) close() {
	s := w.s
	s.t.Helper()
	s.fleet.Charger(w.waitCP).Unreachable(false)
	s.fleet.Charger(w.chargeCP).Unreachable(false)

	s.waitState(w.waiting.ID, "charging")
	c := s.fleet.Charger(w.waitCP)
	s.waitFor("energy on "+w.waitCP, func() bool { si, ok := c.Session(1); return ok && c.Register(1) > si.StartWh+50 })
	s.mustDo("POST", "/v1/sessions/"+w.waiting.ID+"/stop", appToken, nil, 202)
	var ids []string
	for _, cmd := range c.Commands() {
		if cmd.Type == "start" && cmd.SessionID == w.waiting.ID && !slices.Contains(ids, cmd.CmdID) {
			ids = append(ids, cmd.CmdID)
		}
	}
	if len(ids) != 1 {
		s.t.Fatalf("start cmd_ids for %s: %v, want one", w.waiting.ID, ids)
	}

	var total, collected int64
	for _, id := range []string{w.waiting.ID, w.charging.ID} {
		v := s.waitState(id, "paid")
		checkPaid(s.t, s, v)
		total += v.AmountFen
		collected += int64(s.ledger(v.OutOrderNo).Collected)
	}
	if collected != total {
		s.t.Fatalf("sandbox collected %d fen, sessions billed %d", collected, total)
	}
	stopped := s.get(w.charging.ID)
	if stopped.hasFlag("stop_unconfirmed") || endNote(s, w.charging.ID) != "remote" {
		s.t.Fatalf("stopped in the window: flags %v, the charger's end %q (want remote)", stopped.Flags, endNote(s, w.charging.ID))
	}
}

// endNote is the note of the history entry the charger's `ended` wrote:
// its end reason.
func endNote(s *stack, id string) string {
	var v struct {
		History []struct {
			Event, By, Note string
		} `json:"history"`
	}
	if err := json.Unmarshal(s.mustDo("GET", "/v1/sessions/"+id, appToken, nil, 200), &v); err != nil {
		s.t.Fatal(err)
	}
	for _, h := range v.History {
		if h.Event == "ended" && h.By == "charger" {
			return h.Note
		}
	}
	return ""
}

// TestKillDashNineReconnectWindow: serve is killed with -9 and started
// again; the user confirms and another stops right after the restart,
// while the chargers are still reconnecting. On the embedded stack the
// broker restarted with the service: its sessions came back from disk, and
// no charger is online before it reconnected.
func TestKillDashNineReconnectWindow(t *testing.T) {
	bin := buildBinary(t)
	for _, backend := range []string{"embedded", "external"} {
		t.Run(backend, func(t *testing.T) {
			s := newStackWith(t, backend, 2, bin, windowTimeouts...)
			w := openWindow(s, "CP-1", "CP-2")
			s.kill()
			s.start()
			if backend == "embedded" {
				for _, cp := range []string{"CP-1", "CP-2"} {
					code, out := s.do("GET", "/v1/chargers/"+cp, opsToken, nil)
					var c struct {
						Online bool `json:"online"`
					}
					if code != 200 || json.Unmarshal(out, &c) != nil || c.Online {
						t.Fatalf("%s after the restart, before it reconnected: %d %s (a restored retained online is no presence)", cp, code, out)
					}
				}
			}
			// Mosquitto keeps the chargers connected through a restart of
			// the service; the embedded broker went down with it.
			w.act(backend == "embedded")
			w.close()
		})
	}
}

// TestMosquittoRestartReconnectWindow: Mosquitto is killed with -9 and
// started again without persistence, so it knows no charger's session; the
// confirmation and the stop of the window reach the chargers because the
// service sends them again when their state comes back online.
func TestMosquittoRestartReconnectWindow(t *testing.T) {
	mq := testenv.MosquittoProcess(t, "")
	s := newStackWith(t, "external", 2, "", append([]string{"CHARGEFLOW_MQTT_URL", mq.URL}, windowTimeouts...)...)
	w := openWindow(s, "CP-1", "CP-2")
	mq.Restart() // SIGKILL, then the same port, nothing kept
	w.act(true)
	w.close()
	if n := value(scrapeMetrics(t, s), "chargeflow_commands_resent_total", "why", "online"); n < 2 {
		t.Fatalf("%v commands re-sent on reconnect, want the start and the stop at least", n)
	}
}
