// Package repocheck holds checks about the repository itself, run by its
// tests under `make test`: that every citation in code and docs leads to a
// document and section that exist in the repository (CheckCitations), and
// that docs/architecture.md's package graph is the one the imports say
// (DocumentedGraph, Imports, CheckGraph).
//
// The checks read files only; they never build or run anything.
package repocheck

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Problem is one citation that leads nowhere, with what to cite instead.
type Problem struct {
	File string // slash-separated, relative to the repository root
	Line int
	Msg  string
}

func (p Problem) String() string { return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg) }

// Repo is the set of files a check looks at, relative to Root.
type Repo struct {
	Root  string
	Files []string // slash-separated, relative to Root, sorted
}

// LoadRepo lists the files of the repository that contains dir: the files
// git tracks (plus untracked ones not ignored, so a new file is checked
// before it is committed); without git, every file under the root except
// .git.
func LoadRepo(dir string) (*Repo, error) {
	root, err := findRoot(dir)
	if err != nil {
		return nil, err
	}
	r := &Repo{Root: root}
	cmd := exec.Command("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z")
	cmd.Dir = root
	if out, err := cmd.Output(); err == nil {
		for f := range strings.SplitSeq(string(out), "\x00") {
			if f == "" {
				continue
			}
			// A tracked file deleted in the work tree is not there to cite.
			if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(f))); err == nil {
				r.Files = append(r.Files, f)
			}
		}
	} else {
		err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == ".git" {
				return filepath.SkipDir
			}
			if !d.IsDir() {
				rel, _ := filepath.Rel(root, p)
				r.Files = append(r.Files, filepath.ToSlash(rel))
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list files: %w", err)
		}
	}
	slices.Sort(r.Files)
	r.Files = slices.Compact(r.Files)
	return r, nil
}

// findRoot walks up from dir to the directory holding go.mod.
func findRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
	}
}

// Read returns the content of a file of the repository.
func (r *Repo) Read(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(r.Root, filepath.FromSlash(name)))
	return string(b), err
}

func (r *Repo) has(name string) bool {
	_, found := slices.BinarySearch(r.Files, name)
	if found {
		return true
	}
	// A directory: some file lies under it.
	i, _ := slices.BinarySearch(r.Files, name+"/")
	return i < len(r.Files) && strings.HasPrefix(r.Files[i], name+"/")
}

// outsideService is the outside contract's file name, spelled so that a grep
// for citations of it finds only real ones.
const outsideService = "service" + ".md"

var (
	// docRef is a path into docs/ with an extension: docs/contract.md,
	// ../docs/board.png. The character before must not continue a name.
	docRef = regexp.MustCompile(`(?:^|[^A-Za-z0-9_-])((?:\.\./|\./)*docs/[A-Za-z0-9_./-]*\.[A-Za-z0-9]+)`)
	// section is a § reference: § and a number, dotted for a subsection; a
	// range cites each end.
	section = regexp.MustCompile(`§\s?(\d+(?:\.\d+)*)`)
	// heading is a numbered Markdown heading: "## 3. The HTTP API", "### 1.2 Timers".
	heading = regexp.MustCompile(`^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s`)
	// mdLink is a Markdown link target: [text](target) or [text](target#anchor).
	mdLink = regexp.MustCompile(`\]\(([^)\s#]*)(#[^)\s]*)?\)`)
)

// outside lists the ways a text cites a document that is not in the
// repository, each with what to cite instead. A match that is part of a
// docs/ path (docs/contract.md) or of a relative Markdown link inside docs/
// ("](contract.md)") is not outside.
var outside = []struct {
	re   *regexp.Regexp
	what string
	fix  string
}{
	{regexp.MustCompile(`service\.md`), "the outside contract's service file (" + outsideService + ")",
		"cite docs/contract.md §N (numbered like the contract: §1 machine … §7 concurrency)"},
	{regexp.MustCompile(`charger-mqtt\.md`), "charger-mqtt.md, which is not in the repository",
		"cite docs/protocol.md (§1 connection, §2 topics, §3 charger, §4 cloud, §5 implementation, §6 simulator)"},
	{regexp.MustCompile(`huifu-payscore\.md`), "huifu-payscore.md, which is not in the repository",
		"cite docs/payscore.md §N (numbered like the wire profile, §1 … §8)"},
	{regexp.MustCompile(`(?i)\bprofile\s+§`), `"profile §N" without a document`,
		"cite docs/payscore.md §N"},
	{regexp.MustCompile(`\.\./shared\b|/work/|\bshared/(?:spec|notes)\b|\bnotes/[A-Za-z0-9_-]+\.md|\bdependencies\.md|\bstyle\.md`),
		"a file outside the repository",
		"cite the docs/ file that says it (docs/contract.md, docs/protocol.md, docs/payscore.md, docs/architecture.md, …), or say it in the comment"},
	{regexp.MustCompile(`\b[Tt]he spec\b|\bspec's\b|\(spec[:)]`), `"the spec", a document outside the repository`,
		"cite docs/contract.md §N, docs/protocol.md §N or docs/payscore.md §N"},
}

// Exempt names files a check passes over (slash-separated, relative to the
// root): the checker's own sources and tests, which must spell out what
// they look for.
type Exempt struct {
	Skip    []string // not read at all
	Outside []string // read, but not checked for documents outside the repository
}

// CheckCitations scans every .go and .md file of r (except those of ex) and
// reports:
//   - a docs/… path, or a relative Markdown link, to a file that does not exist;
//   - a §N that is not a numbered heading of the document it belongs to: the
//     last docs/… path before it on its line (in a .go file, else on the
//     line before); in a Markdown file under docs/ without one, the file
//     itself;
//   - a §N in a .go file, or in a Markdown file outside docs/, with no
//     document to belong to;
//   - any reference to a document outside the repository (see outside).
func CheckCitations(r *Repo, ex Exempt) ([]Problem, error) {
	sections := map[string][]string{} // docs file → its numbered headings
	sectionsOf := func(doc string) ([]string, error) {
		if s, ok := sections[doc]; ok {
			return s, nil
		}
		text, err := r.Read(doc)
		if err != nil {
			return nil, err
		}
		var nums []string
		inFence := false
		for line := range strings.SplitSeq(text, "\n") {
			if strings.HasPrefix(line, "```") {
				inFence = !inFence
			}
			if m := heading.FindStringSubmatch(line); m != nil && !inFence {
				nums = append(nums, m[1])
			}
		}
		sections[doc] = nums
		return nums, nil
	}

	var problems []Problem
	for _, f := range r.Files {
		// Code comments (Go, and the board's JavaScript) and Markdown.
		isGo, isMD := strings.HasSuffix(f, ".go") || strings.HasSuffix(f, ".js"), strings.HasSuffix(f, ".md")
		if (!isGo && !isMD) || slices.Contains(ex.Skip, f) {
			continue
		}
		text, err := r.Read(f)
		if err != nil {
			return nil, err
		}
		inDocs := isMD && strings.HasPrefix(f, "docs/")
		prevRef := ""
		for i, line := range strings.Split(text, "\n") {
			report := func(format string, args ...any) {
				problems = append(problems, Problem{File: f, Line: i + 1, Msg: fmt.Sprintf(format, args...)})
			}
			// Paths into docs/.
			type ref struct {
				at  int
				doc string
			}
			var refs []ref
			for _, m := range docRef.FindAllStringSubmatchIndex(line, -1) {
				raw := strings.TrimRight(line[m[2]:m[3]], ".")
				doc := raw[strings.Index(raw, "docs/"):]
				if !r.has(doc) {
					report("%s does not exist: cite a file of docs/ (%s)", raw, strings.Join(r.docs(), ", "))
					continue
				}
				refs = append(refs, ref{m[2], doc})
			}
			// Relative Markdown links.
			if isMD {
				for _, m := range mdLink.FindAllStringSubmatchIndex(line, -1) {
					target := line[m[2]:m[3]]
					if target == "" || strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") || strings.HasPrefix(target, "/") {
						continue
					}
					p := path.Clean(path.Join(path.Dir(f), target))
					if !r.has(p) {
						report("the link (%s) leads to %s, which does not exist", target, p)
					}
				}
			}
			// Documents outside the repository. A § right after such a
			// citation is part of it: the message says what to cite instead.
			claimed := -1
			for _, o := range outside {
				if slices.Contains(ex.Outside, f) {
					break
				}
				for _, m := range o.re.FindAllStringIndex(line, -1) {
					before := line[:m[0]]
					if strings.HasSuffix(before, "docs/") || (inDocs && strings.HasSuffix(before, "](")) {
						continue
					}
					fix := o.fix
					if sm := section.FindStringSubmatchIndex(line[m[0]:]); sm != nil && sm[0] <= m[1]-m[0]+2 {
						fix = strings.ReplaceAll(fix, "§N", "§"+line[m[0]+sm[2]:m[0]+sm[3]])
						claimed = max(claimed, m[0]+sm[0])
					}
					report("cites %s (%q): %s", o.what, line[m[0]:m[1]], fix)
				}
			}
			// § references.
			for _, m := range section.FindAllStringSubmatchIndex(line, -1) {
				num := line[m[2]:m[3]]
				doc := ""
				for _, rf := range refs {
					if rf.at < m[0] {
						doc = rf.doc
					}
				}
				switch {
				case doc != "":
				case m[0] <= claimed:
					continue
				case inDocs:
					doc = f
				case isGo && prevRef != "":
					doc = prevRef
				default:
					report("§%s names no document: cite docs/contract.md §%s, docs/payscore.md §%s or docs/protocol.md §%s", num, num, num, num)
					continue
				}
				if !strings.HasSuffix(doc, ".md") {
					report("§%s cites %s, which has no sections: cite a docs/*.md file", num, doc)
					continue
				}
				nums, err := sectionsOf(doc)
				if err != nil {
					return nil, err
				}
				if !slices.Contains(nums, num) {
					report("%s has no §%s: its numbered sections are %s", doc, num, listSections(nums))
				}
			}
			if len(refs) > 0 {
				prevRef = refs[len(refs)-1].doc
			} else {
				prevRef = ""
			}
		}
	}
	return problems, nil
}

// docs lists the Markdown files of docs/.
func (r *Repo) docs() []string {
	var out []string
	for _, f := range r.Files {
		if strings.HasPrefix(f, "docs/") && strings.HasSuffix(f, ".md") {
			out = append(out, f)
		}
	}
	return out
}

func listSections(nums []string) string {
	if len(nums) == 0 {
		return "none (cite the file without §)"
	}
	return "§" + strings.Join(nums, ", §")
}
