package repocheck

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// exempt is what the repository checks pass over: this package's tests
// (they hold bad citations on purpose) and, for the outside rule, the
// checker that spells out the names it refuses.
func exempt(r *Repo) Exempt {
	var ex Exempt
	for _, f := range r.Files {
		if strings.HasPrefix(f, "internal/repocheck/") && strings.HasSuffix(f, "_test.go") {
			ex.Skip = append(ex.Skip, f)
		}
	}
	ex.Outside = []string{"internal/repocheck/citations.go"}
	return ex
}

// TestCitations: every citation in a .go or .md file of the repository leads
// to a docs/ file and section that exist, and nothing cites a document
// outside the repository.
func TestCitations(t *testing.T) {
	r, err := LoadRepo(".")
	if err != nil {
		t.Fatal(err)
	}
	if !r.has("docs/contract.md") || !r.has("go.mod") {
		t.Fatalf("the file list of %s lacks docs/contract.md or go.mod: %d files", r.Root, len(r.Files))
	}
	problems, err := CheckCitations(r, exempt(r))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// TestCheckCitationsFinds runs the checker on a small repository of its own:
// each line below is either clean or must be reported with the given words.
func TestCheckCitationsFinds(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example\n")
	write("docs/contract.md", "# Contract\n\n## 1. The machine\n\n### 1.2 Timers\n\n## 2. Money\n\n```\n## 9. not a heading (code)\n```\n\nSee §2 and §7.\n")
	write("docs/plain.md", "# No numbers\n\n## Intro\n")
	write("docs/board.png", "png")

	goCases := []struct {
		line string
		want string // "" = clean; else a word the problem must contain
	}{
		{"// bare (§2).", "names no document"},
		{"// the machine (docs/contract.md §1).", ""},
		{"// timers (docs/contract.md §1.2, §2).", ""},
		{"// a picture: docs/board.png.", ""},
		{"// no such section (docs/contract.md §3).", "has no §3"},
		{"// no such file (docs/nope.md).", "does not exist"},
		{"// plain has no sections (docs/plain.md §1).", "none"},
		{"// the contract (" + outsideService + " §1).", "cite docs/contract.md §1 "},
		{"// the protocol (charger-mqtt.md).", "docs/protocol.md"},
		{"// the profile (huifu-payscore.md §4).", "docs/payscore.md"},
		{"// Huifu (profile §4).", "cite docs/payscore.md §4"},
		{"// see ../shared/spec/" + outsideService, "outside"},
		{"// see /work/shared/notes/dependencies.md", "outside"},
		{"// the spec's ACL", "the spec"},
		{"// default 10s (spec)", "the spec"},
		{"var specs = 1 // many specs, and docs/contract.md §2", ""},
		{"// a wrapped citation (docs/contract.md §1,", ""},
		{"// §2): the line before names the document.", ""},
	}
	var src strings.Builder
	for _, c := range goCases {
		src.WriteString(c.line + "\n")
	}
	write("pkg/x.go", src.String())

	mdCases := []struct {
		line string
		want string
	}{
		{"The contract: [`docs/contract.md §2`](docs/contract.md).", ""},
		{"A bare §1 in a file outside docs/.", "names no document"},
		{"A [dead link](docs/gone.md).", "does not exist"},
		{"A [web link](https://example.com/" + outsideService + ") is not checked for existence.", "docs/contract.md §N"},
	}
	var md strings.Builder
	for _, c := range mdCases {
		md.WriteString(c.line + "\n")
	}
	write("README.md", md.String())
	write("docs/api.md", "Self: §1 of this file does not exist.\nThe contract [`docs/contract.md §1`](contract.md) and its §2.\nA [relative link](contract.md) and one [gone](nothing.md).\n")

	r := &Repo{Root: dir, Files: []string{"README.md", "docs/api.md", "docs/board.png", "docs/contract.md", "docs/plain.md", "go.mod", "pkg/x.go"}}
	problems, err := CheckCitations(r, Exempt{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{} // file:line → messages
	for _, p := range problems {
		k := p.File + ":" + strconv.Itoa(p.Line)
		got[k] = append(got[k], p.Msg)
	}
	check := func(file string, line int, text, want string) {
		t.Helper()
		k := file + ":" + strconv.Itoa(line)
		msgs := got[k]
		delete(got, k)
		switch {
		case want == "" && len(msgs) > 0:
			t.Errorf("%s %q: want no problem, got %q", k, text, msgs)
		case want != "" && !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, want) }):
			t.Errorf("%s %q: want a problem saying %q, got %q", k, text, want, msgs)
		}
	}
	for i, c := range goCases {
		check("pkg/x.go", i+1, c.line, c.want)
	}
	for i, c := range mdCases {
		check("README.md", i+1, c.line, c.want)
	}
	check("docs/api.md", 1, "self §1", "docs/api.md has no §1")
	check("docs/api.md", 2, "service §1, §2", "")
	check("docs/api.md", 3, "links", "nothing.md")
	check("docs/contract.md", 13, "See §2 and §7.", "has no §7")
	for k, msgs := range got {
		t.Errorf("unexpected problem at %s: %q", k, msgs)
	}
}
