package repocheck

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// prereqsDir copies scripts/prereqs.sh into a directory anyone may read (the
// non-root case runs it as nobody) beside the given list, and returns the
// script's path and the list's.
func prereqsDir(t *testing.T, list string) (script, listPath string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "chargeflow-prereqs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("../../scripts/prereqs.sh")
	if err != nil {
		t.Fatal(err)
	}
	script = filepath.Join(dir, "prereqs.sh")
	listPath = filepath.Join(dir, "list")
	if err := os.WriteFile(script, src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(listPath, []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	return script, listPath
}

// runPrereqs runs the script with only PATH and PREREQS_LIST set; as nobody
// when asked (and we are root).
func runPrereqs(t *testing.T, script, list, path string, asNobody bool) (stderr string, code int) {
	t.Helper()
	cmd := exec.Command("/bin/bash", script)
	cmd.Env = []string{"PATH=" + path, "PREREQS_LIST=" + list}
	cmd.Dir = filepath.Dir(script)
	if asNobody && os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run %s: %v", script, err)
	}
	return errb.String(), code
}

const systemPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// TestPrereqsPresent: with everything there the script says nothing and
// succeeds.
func TestPrereqsPresent(t *testing.T) {
	script, list := prereqsDir(t, "# comment\n\nsh  dash  a shell\n/  base-files  the root\n")
	if out, code := runPrereqs(t, script, list, systemPath, true); code != 0 || out != "" {
		t.Fatalf("exit %d, stderr %q; want 0 and nothing", code, out)
	}
}

// TestPrereqsNotRoot: a missing tool and no root stop the script at once with
// one line naming the exact command.
func TestPrereqsNotRoot(t *testing.T) {
	script, list := prereqsDir(t, "chargeflow-no-such-tool  chargeflow-pkg-a  why\nsh dash shell\n/chargeflow/no/such/file  chargeflow-pkg-b  why\n")
	out, code := runPrereqs(t, script, list, systemPath, true)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr %q", code, out)
	}
	if n := strings.Count(strings.TrimRight(out, "\n"), "\n"); n != 0 {
		t.Errorf("want one line, got %d:\n%s", n+1, out)
	}
	if !strings.Contains(out, "sudo apt-get install -y chargeflow-pkg-a chargeflow-pkg-b") {
		t.Errorf("the line does not name the command: %q", out)
	}
}

// fakeAptGet puts an apt-get first in PATH that logs its arguments and, on
// install, creates the tool (or fails when fail is set).
func fakeAptGet(t *testing.T, dir string, fail bool) (path, log string) {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	log = filepath.Join(dir, "apt.log")
	body := "#!/bin/sh\necho \"$DEBIAN_FRONTEND $*\" >>" + log + "\n"
	if fail {
		body += "[ \"$1\" = install ] && { echo 'E: Unable to locate package' >&2; exit 100; }\n"
	} else {
		body += "[ \"$1\" = install ] && printf '#!/bin/sh\\n' >" + bin + "/chargeflow-fake-tool && chmod +x " + bin + "/chargeflow-fake-tool\n"
	}
	body += "exit 0\n"
	if err := os.WriteFile(filepath.Join(bin, "apt-get"), []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin + ":" + systemPath, log
}

// TestPrereqsRootInstalls: as root with apt-get the script installs what is
// missing, non-interactively and quietly, and checks again.
func TestPrereqsRootInstalls(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the install path runs only as root")
	}
	script, list := prereqsDir(t, "chargeflow-fake-tool  chargeflow-fake-pkg  why\n")
	path, log := fakeAptGet(t, filepath.Dir(script), false)
	out, code := runPrereqs(t, script, list, path, false)
	if code != 0 {
		t.Fatalf("exit %d; stderr %q", code, out)
	}
	if out != "prereqs: installing chargeflow-fake-pkg (apt-get)\n" {
		t.Errorf("stderr %q", out)
	}
	calls, _ := os.ReadFile(log)
	if want := "noninteractive update -qq\nnoninteractive install -y -qq chargeflow-fake-pkg\n"; string(calls) != want {
		t.Errorf("apt-get calls:\n%s\nwant:\n%s", calls, want)
	}
}

// TestPrereqsRootInstallFails: a failing apt-get ends with a line naming the
// command to run by hand.
func TestPrereqsRootInstallFails(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the install path runs only as root")
	}
	script, list := prereqsDir(t, "chargeflow-fake-tool  chargeflow-fake-pkg  why\n")
	path, _ := fakeAptGet(t, filepath.Dir(script), true)
	out, code := runPrereqs(t, script, list, path, false)
	if code != 1 || !strings.HasSuffix(out, "run it yourself: apt-get install -y chargeflow-fake-pkg\n") || !strings.Contains(out, "Unable to locate") {
		t.Fatalf("exit %d, stderr %q", code, out)
	}
}

// TestPrereqsWiring: `make test` checks the prerequisites first and runs with
// cgo on (-race needs it); `make run` does not check them; .ci/run installs
// through the same script and then runs exactly `make test`.
func TestPrereqsWiring(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	target := func(name string) (deps, recipe string) {
		m := regexp.MustCompile(`(?m)^` + name + `:(.*)\n((?:\t.*\n)*)`).FindStringSubmatch(string(mk))
		if m == nil {
			t.Fatalf("Makefile has no %s target", name)
		}
		return strings.TrimSpace(m[1]), m[2]
	}
	if deps, _ := target("test"); strings.Fields(deps)[0] != "prereqs" {
		t.Errorf("test: depends on %q, want prereqs first", deps)
	}
	if _, recipe := target("prereqs"); !strings.Contains(recipe, "scripts/prereqs.sh") {
		t.Errorf("prereqs: recipe %q does not run scripts/prereqs.sh", recipe)
	}
	if _, recipe := target("test"); strings.Count(recipe, "CGO_ENABLED=1 $(GO)") != strings.Count(recipe, "$(GO)") {
		t.Errorf("test: every go command needs CGO_ENABLED=1:\n%s", recipe)
	}
	if deps, recipe := target("run"); deps != "" || strings.Contains(recipe, "prereqs") {
		t.Errorf("run: must need only Go, got deps %q recipe %q", deps, recipe)
	}
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, l := range strings.Split(string(ci), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, "set ") && !strings.HasPrefix(l, "cd ") && !strings.HasPrefix(l, "export ") {
			steps = append(steps, l)
		}
	}
	if want := []string{"bash scripts/prereqs.sh", "make test"}; strings.Join(steps, "\n") != strings.Join(want, "\n") {
		t.Errorf(".ci/run steps %q, want %q", steps, want)
	}
}
