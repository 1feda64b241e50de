package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestCommandsResent: every (type, why) series exists at 0 and counts; an
// unknown label value is "other".
func TestCommandsResent(t *testing.T) {
	m := New()
	m.CommandResent("start", "online")
	m.CommandResent("start", "online")
	m.CommandResent("bogus", "nope")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		`chargeflow_commands_resent_total{type="start",why="online"} 2`,
		`chargeflow_commands_resent_total{type="stop",why="unanswered"} 0`,
		`chargeflow_commands_resent_total{type="other",why="other"} 1`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
}
