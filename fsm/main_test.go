package fsm

import (
	"flag"
	"os"
	"testing"
)

// TestMain lengthens rapid's sequences unless they are set on the command
// line: the money invariants only bite once a session is far down the path.
func TestMain(m *testing.M) {
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["rapid.steps"] {
		_ = flag.Set("rapid.steps", "150")
	}
	if !set["rapid.checks"] && !testing.Short() {
		_ = flag.Set("rapid.checks", "300")
	}
	os.Exit(m.Run())
}
