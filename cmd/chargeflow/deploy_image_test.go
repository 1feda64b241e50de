package main

import (
	"bytes"
	"debug/elf"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// imageUID is the image's user (the Dockerfile's USER), which the empty-root
// run takes too.
const imageUID = 65532

// TestDeployImage builds chargeflow with the Dockerfile's own `go build` line
// (its environment, flags and build argument), checks the binary is static,
// and runs it the way the image does: in an empty root — no /etc, no
// zoneinfo, no CA bundle, nothing but the binary and its data directory — as
// the image's user, with the image's ENV. There `serve --dev` answers
// /healthz, `chargeflow healthcheck` exits 0, and `chargeflow version` names
// the revision the build was given.
func TestDeployImage(t *testing.T) {
	df := readText(t, "../../Dockerfile")
	for _, want := range []string{"\nFROM scratch\n", "\nUSER 65532:65532\n", `HEALTHCHECK `, `CMD ["/chargeflow", "healthcheck"]`} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if n := strings.Count(df, "\nFROM "); n < 2 {
		t.Errorf("Dockerfile has %d stages, want a build stage and the image", n)
	}
	env, args := dockerfileBuild(t, df, "deploy-test-revision")
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "chargeflow")
	build := exec.Command("go", append(args, "-o", bin, "./cmd/chargeflow")...)
	build.Dir = "../.."
	build.Env = append(os.Environ(), env...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if f, err := elf.Open(bin); err != nil {
		t.Fatal(err)
	} else {
		libs, _ := f.ImportedLibraries()
		interp := false
		for _, p := range f.Progs {
			interp = interp || p.Type == elf.PT_INTERP
		}
		f.Close()
		if interp || len(libs) > 0 {
			t.Fatalf("the binary is not static: interpreter %v, libraries %v", interp, libs)
		}
	}

	// The image's data directory and its owner.
	imageEnv := dockerfileEnv(t)
	dataDir := imageEnv["CHARGEFLOW_DATA_DIR"]
	if !filepath.IsAbs(dataDir) {
		t.Fatalf("the image's CHARGEFLOW_DATA_DIR %q is not absolute", dataDir)
	}
	if err := os.MkdirAll(filepath.Join(root, dataDir), 0o700); err != nil {
		t.Fatal(err)
	}
	chrooted := os.Geteuid() == 0
	if chrooted {
		if err := os.Chown(filepath.Join(root, dataDir), imageUID, imageUID); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Log("not root: no chroot, only an empty environment in an empty directory")
		dataDir = filepath.Join(root, dataDir)
	}
	var envList []string
	for k, v := range imageEnv {
		if k == "CHARGEFLOW_DATA_DIR" {
			v = dataDir
		}
		envList = append(envList, k+"="+v)
	}
	inImage := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Env = envList
		cmd.Dir = root
		if chrooted {
			cmd.Path, cmd.Dir = "/chargeflow", "/"
			cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: imageUID, Gid: imageUID}}
		}
		return cmd
	}

	out, errb := &syncBuffer{}, &syncBuffer{}
	serve := inImage("serve", "--dev", "--demo-traffic=false", "--http-addr", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0")
	serve.Stdout, serve.Stderr = out, errb
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			_ = serve.Process.Kill()
			<-done
		}
	}()
	var httpURL string
	deadline := time.Now().Add(60 * time.Second)
	for httpURL == "" {
		for _, f := range strings.Fields(out.String()) {
			if v, ok := strings.CutPrefix(f, "http="); ok && strings.Contains(out.String(), "chargeflow ready:") {
				httpURL = v
			}
		}
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("serve --dev in an empty root exited: %v\n%s", err, tail(errb.String()))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve --dev in an empty root not ready after 60s:\n%s", tail(errb.String()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Get(httpURL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz answered %s", resp.Status)
	}

	hc := inImage("healthcheck")
	hc.Env = append(hc.Env, "CHARGEFLOW_HTTP_ADDR="+strings.TrimPrefix(httpURL, "http://"))
	if b, err := hc.CombinedOutput(); err != nil {
		t.Fatalf("chargeflow healthcheck in the image: %v\n%s", err, b)
	}
	if b, err := inImage("healthcheck", "--url", httpURL+"/no-such-route").CombinedOutput(); err == nil || !bytes.Contains(b, []byte("404")) {
		t.Fatalf("healthcheck of a 404: %v\n%s", err, b)
	}
	b, err := inImage("version").CombinedOutput()
	if err != nil || !bytes.Contains(b, []byte("revision: deploy-test-revision")) {
		t.Fatalf("chargeflow version in the image: %v\n%s", err, b)
	}

	_ = serve.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		stopped = true
		if err != nil {
			t.Fatalf("serve did not stop cleanly on SIGTERM: %v\n%s", err, tail(errb.String()))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30s of SIGTERM")
	}
}

// dockerfileBuild parses the Dockerfile's `RUN … go build …` line: the
// environment assignments before `go`, and go's arguments without `-o` and
// the package, with ${ARG} replaced by revision for REVISION (the only
// build argument) — so the test builds exactly as the image does.
func dockerfileBuild(t *testing.T, df, revision string) (env, args []string) {
	t.Helper()
	var line string
	for _, l := range strings.Split(df, "\n") {
		if strings.HasPrefix(l, "RUN ") && strings.Contains(l, " go build ") {
			if line != "" {
				t.Fatal("Dockerfile: two `go build` lines")
			}
			line = strings.TrimPrefix(l, "RUN ")
		}
	}
	if line == "" {
		t.Fatal("Dockerfile: no `RUN … go build` line")
	}
	words := shellWords(t, strings.NewReplacer("${REVISION}", revision, "$REVISION", revision).Replace(line))
	i := 0
	for ; i < len(words) && words[i] != "go"; i++ {
		if !strings.Contains(words[i], "=") {
			t.Fatalf("Dockerfile: %q before go in %q", words[i], line)
		}
		env = append(env, words[i])
	}
	if strings.Contains(strings.Join(words, " "), "$") {
		t.Fatalf("Dockerfile: a variable this test does not know in %q", line)
	}
	for j := i + 1; j < len(words); j++ {
		switch {
		case words[j] == "-o":
			j++
		case words[j] == "./cmd/chargeflow":
		default:
			args = append(args, words[j])
		}
	}
	if !strings.Contains(strings.Join(env, " "), "CGO_ENABLED=0") || !strings.Contains(strings.Join(args, " "), "-trimpath") {
		t.Errorf("Dockerfile: the build must be static (CGO_ENABLED=0) and -trimpath: %q", line)
	}
	return env, args
}

// shellWords splits a command line the way sh does for the quoting a
// Dockerfile's RUN line uses here: spaces, and "…" or '…' within a word.
func shellWords(t *testing.T, s string) []string {
	var words []string
	var cur strings.Builder
	in, quote := false, rune(0)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		case r == '\\' || r == '&' || r == '|' || r == ';':
			t.Fatalf("Dockerfile: the go build line must be one plain command: %q", s)
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		t.Fatalf("Dockerfile: unbalanced quote in %q", s)
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}
