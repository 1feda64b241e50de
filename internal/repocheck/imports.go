package repocheck

import (
	"fmt"
	"go/build"
	"go/parser"
	"go/token"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// GraphRow is one row of docs/architecture.md's package table: the package
// (which stands for itself and every package under it) and the rows it
// knows.
type GraphRow struct {
	Package string
	Knows   []string
	Line    int
}

var backticked = regexp.MustCompile("`([^`]+)`")

// DocumentedGraph parses the first Markdown table after the heading
// "## Packages" of the architecture document: its "package" and "knows"
// columns. In "knows", every back-quoted name is a row known; "—" or an
// empty cell is none.
func DocumentedGraph(doc string) ([]GraphRow, error) {
	lines := strings.Split(doc, "\n")
	i := slices.IndexFunc(lines, func(l string) bool { return strings.TrimSpace(l) == "## Packages" })
	if i < 0 {
		return nil, fmt.Errorf(`no "## Packages" heading`)
	}
	for i < len(lines) && !strings.HasPrefix(lines[i], "|") {
		i++
	}
	if i+1 >= len(lines) {
		return nil, fmt.Errorf(`no table after "## Packages"`)
	}
	cells := func(l string) []string {
		l = strings.TrimSpace(l)
		l = strings.TrimPrefix(strings.TrimSuffix(l, "|"), "|")
		out := strings.Split(l, "|")
		for j := range out {
			out[j] = strings.TrimSpace(out[j])
		}
		return out
	}
	header := cells(lines[i])
	pkgCol, knowsCol := slices.Index(header, "package"), slices.Index(header, "knows")
	if pkgCol < 0 || knowsCol < 0 {
		return nil, fmt.Errorf("line %d: the table needs a %q and a %q column, has %q", i+1, "package", "knows", header)
	}
	var rows []GraphRow
	for j := i + 2; j < len(lines) && strings.HasPrefix(lines[j], "|"); j++ {
		c := cells(lines[j])
		if len(c) != len(header) {
			return nil, fmt.Errorf("line %d: %d cells, the header has %d", j+1, len(c), len(header))
		}
		m := backticked.FindStringSubmatch(c[pkgCol])
		if m == nil {
			return nil, fmt.Errorf("line %d: the package cell %q names no `package`", j+1, c[pkgCol])
		}
		row := GraphRow{Package: m[1], Line: j + 1}
		for _, k := range backticked.FindAllStringSubmatch(c[knowsCol], -1) {
			row.Knows = append(row.Knows, k[1])
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// Imports maps each package of the module (a directory relative to the
// root, "." for the root) to the packages of the module its non-test files
// import, each with the first file that imports it. Files are parsed with
// go/parser; build constraints and GOOS/GOARCH file names are honoured as
// go/build's default context does. testdata and _test.go files are left
// out.
func Imports(r *Repo) (map[string]map[string]string, error) {
	gomod, err := r.Read("go.mod")
	if err != nil {
		return nil, err
	}
	module := ""
	for l := range strings.SplitSeq(gomod, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "module" {
			module = f[1]
		}
	}
	if module == "" {
		return nil, fmt.Errorf("go.mod names no module")
	}
	ctx := build.Default
	out := map[string]map[string]string{}
	fset := token.NewFileSet()
	for _, f := range r.Files {
		dir, base := path.Split(f)
		dir = strings.TrimSuffix(dir, "/")
		if dir == "" {
			dir = "."
		}
		if !strings.HasSuffix(f, ".go") || strings.HasSuffix(f, "_test.go") ||
			slices.Contains(strings.Split(dir, "/"), "testdata") {
			continue
		}
		if ok, err := ctx.MatchFile(r.Root+"/"+dir, base); err != nil || !ok {
			continue
		}
		text, err := r.Read(f)
		if err != nil {
			return nil, err
		}
		af, err := parser.ParseFile(fset, f, text, parser.ImportsOnly)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", f, err)
		}
		if out[dir] == nil {
			out[dir] = map[string]string{}
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if rel, ok := strings.CutPrefix(p, module+"/"); ok {
				if _, seen := out[dir][rel]; !seen {
					out[dir][rel] = f
				}
			}
		}
	}
	return out, nil
}

// CheckGraph compares the documented rows with the imports: every package
// of the module must fall under a row (the row whose package is its longest
// prefix), and a row's "knows" must be exactly the rows of what the
// packages under it import, itself left out. doc names the document in the
// messages.
func CheckGraph(doc string, rows []GraphRow, imports map[string]map[string]string) []Problem {
	var problems []Problem
	report := func(line int, format string, args ...any) {
		problems = append(problems, Problem{File: doc, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	rowOf := func(pkg string) (GraphRow, bool) {
		best, found := GraphRow{}, false
		for _, r := range rows {
			if (pkg == r.Package || strings.HasPrefix(pkg, r.Package+"/")) && len(r.Package) >= len(best.Package) {
				best, found = r, true
			}
		}
		return best, found
	}
	tableLine := 0 // the header, for problems no row owns
	if len(rows) > 0 {
		tableLine = rows[0].Line - 2
	}
	lineOf := map[string]int{}
	for _, r := range rows {
		if _, dup := lineOf[r.Package]; dup {
			report(r.Line, "`%s` has two rows", r.Package)
		}
		lineOf[r.Package] = r.Line
	}
	actual := map[string]map[string]string{} // row → row it knows → why (a file and its import)
	for _, pkg := range slices.Sorted(maps.Keys(imports)) {
		row, ok := rowOf(pkg)
		if !ok {
			report(tableLine, "package %s has no row in the package table: add one (or put it under a row's package)", pkg)
			continue
		}
		if actual[row.Package] == nil {
			actual[row.Package] = map[string]string{}
		}
		for _, imp := range slices.Sorted(maps.Keys(imports[pkg])) {
			target, ok := rowOf(imp)
			if !ok {
				report(tableLine, "package %s (imported by %s) has no row in the package table", imp, imports[pkg][imp])
				continue
			}
			if target.Package == row.Package {
				continue
			}
			if _, seen := actual[row.Package][target.Package]; !seen {
				actual[row.Package][target.Package] = fmt.Sprintf("%s imports %s", imports[pkg][imp], imp)
			}
		}
	}
	for _, r := range rows {
		for _, k := range r.Knows {
			if _, ok := lineOf[k]; !ok {
				report(r.Line, "`%s` knows `%s`, which is not a row of the table", r.Package, k)
				continue
			}
			if _, ok := actual[r.Package][k]; !ok {
				report(r.Line, "`%s` is said to know `%s`, but no non-test file under %s imports it: take `%s` out of its knows column", r.Package, k, r.Package, k)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(actual[r.Package])) {
			if !slices.Contains(r.Knows, k) {
				report(r.Line, "`%s` knows `%s` (%s), but the table does not say so: add `%s` to its knows column", r.Package, k, actual[r.Package][k], k)
			}
		}
	}
	return problems
}
