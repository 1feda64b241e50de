package repocheck

import (
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestPackageGraph: the "knows" column of docs/architecture.md's package
// table is exactly what the non-test files import, and every package has a
// row.
func TestPackageGraph(t *testing.T) {
	r, err := LoadRepo(".")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := r.Read("docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := DocumentedGraph(doc)
	if err != nil {
		t.Fatalf("docs/architecture.md: %v", err)
	}
	imports, err := Imports(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 5 || len(imports["session"]) == 0 {
		t.Fatalf("read %d rows and %d packages (session imports %v): the parse is broken", len(rows), len(imports), imports["session"])
	}
	for _, p := range CheckGraph("docs/architecture.md", rows, imports) {
		t.Error(p)
	}
}

// TestImportsAgreeWithGoList: Imports (go/parser) sees what the go command
// sees, so TestPackageGraph checks the real graph.
func TestImportsAgreeWithGoList(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to cross-check the import parser: %v", err)
	}
	r, err := LoadRepo(".")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gobin, "list", "-f", `{{.Module.Path}} {{.ImportPath}} {{join .Imports " "}}`, "./...")
	cmd.Dir = r.Root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	want := map[string][]string{}
	for l := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		mod, pkg := f[0], strings.TrimPrefix(strings.TrimPrefix(f[1], f[0]), "/")
		if pkg == "" {
			pkg = "."
		}
		var own []string
		for _, imp := range f[2:] {
			if rel, ok := strings.CutPrefix(imp, mod+"/"); ok {
				own = append(own, rel)
			}
		}
		want[pkg] = own
	}
	got, err := Imports(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range slices.Sorted(maps.Keys(want)) {
		if g := slices.Sorted(maps.Keys(got[pkg])); !slices.Equal(g, want[pkg]) && !(len(g) == 0 && len(want[pkg]) == 0) {
			t.Errorf("%s: parsed imports %v, go list says %v", pkg, g, want[pkg])
		}
	}
	for pkg := range got {
		if _, ok := want[pkg]; !ok {
			t.Errorf("parsed a package %s that go list does not know", pkg)
		}
	}
}

// TestCheckGraphFinds: the comparison reports each kind of drift.
func TestCheckGraphFinds(t *testing.T) {
	doc := "# A\n\n## Packages\n\n| package | role | knows |\n|---|---|---|\n" +
		"| `fsm` | machine | `money` |\n" +
		"| `money` | fen | — |\n" +
		"| `store` | port; `store/redis` | `fsm`, `money` |\n" +
		"| `metrics` | gauges | `session`, `fsm`, `ghost` |\n" +
		"| `session` | engine | `fsm` |\n"
	rows, err := DocumentedGraph(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 5 || rows[3].Package != "metrics" || !slices.Equal(rows[3].Knows, []string{"session", "fsm", "ghost"}) || rows[1].Knows != nil {
		t.Fatalf("rows: %+v", rows)
	}
	imports := map[string]map[string]string{
		"fsm":         {"money": "fsm/a.go"},
		"money":       {},
		"store":       {"fsm": "store/s.go"},
		"store/redis": {"money": "store/redis/r.go", "store": "store/redis/r.go"}, // store's own: not knowledge
		"metrics":     {"fsm": "metrics/m.go", "store/redis": "metrics/m.go"},     // store, not session
		"session":     {"fsm": "session/e.go"},
		"api":         {"session": "api/x.go"}, // no row
	}
	var got []string
	for _, p := range CheckGraph("arch.md", rows, imports) {
		got = append(got, p.String())
	}
	want := []string{
		"package api has no row",
		"`metrics` knows `ghost`, which is not a row",
		"`metrics` is said to know `session`, but no non-test file",
		"`metrics` knows `store` (metrics/m.go imports store/redis), but the table does not say so",
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.Contains(g, w) }) {
			t.Errorf("no problem saying %q in %q", w, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d problems, want %d: %q", len(got), len(want), got)
	}
}
