package fsm

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/state-machine.md from the machine")

// TestStateDiagram fails when docs/state-machine.md is not what the machine's
// own definition renders. Run `go test ./fsm -run TestStateDiagram -update`.
func TestStateDiagram(t *testing.T) {
	path := filepath.Join("..", "docs", "state-machine.md")
	want := DiagramMarkdown()
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v (run with -update)", path, err)
	}
	if string(got) != want {
		t.Fatalf("%s is out of date: run `go test ./fsm -run TestStateDiagram -update`", path)
	}
	for _, s := range States {
		if s != Created && !strings.Contains(want, string(s)) {
			t.Errorf("diagram lacks state %s", s)
		}
	}
	if DiagramMarkdown() != want {
		t.Fatal("the diagram is not deterministic")
	}
}
