package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// TestOpsVersion: `chargeflow version` names the module version, the VCS
// revision and time and the Go version; what the build did not record says
// unknown.
func TestOpsVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"version"}, func(string) string { return "" }, &out, &errb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"chargeflow ", "revision: ", "time: ", "go:       " + runtime.Version()} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("version output lacks %q:\n%s", want, out.String())
		}
	}
	if err := run(context.Background(), []string{"version", "extra"}, func(string) string { return "" }, &out, &errb); err == nil {
		t.Error("version accepted an argument")
	}

	bi := &debug.BuildInfo{GoVersion: "go1.26.9", Main: debug.Module{Path: "github.com/chargeflow/chargeflow", Version: "v1.4.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	want := "chargeflow v1.4.0\n  revision: 0123abcd (modified)\n  time:     2026-12-01T10:00:00Z\n  go:       go1.26.9 " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if got := versionText(bi); got != want {
		t.Errorf("versionText:\n%s\nwant:\n%s", got, want)
	}
	if got := versionText(nil); !strings.Contains(got, "chargeflow unknown\n  revision: unknown\n  time:     unknown\n") {
		t.Errorf("versionText(nil):\n%s", got)
	}
}

// TestOpsHealthcheck: exit 0 (nil) on 200, a clear error naming the URL and
// the answer otherwise, and the default URL follows CHARGEFLOW_HTTP_ADDR.
func TestOpsHealthcheck(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte("store down\n"))
	}))
	defer srv.Close()
	hc := func(env map[string]string, args ...string) error {
		var out, errb bytes.Buffer
		return run(context.Background(), append([]string{"healthcheck"}, args...), func(k string) string { return env[k] }, &out, &errb)
	}
	if err := hc(nil, "--url", srv.URL+"/healthz"); err != nil {
		t.Fatalf("200: %v", err)
	}
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	if err := hc(map[string]string{"CHARGEFLOW_HTTP_ADDR": ":" + port}); err != nil {
		t.Fatalf("default URL from CHARGEFLOW_HTTP_ADDR: %v", err)
	}
	status = http.StatusServiceUnavailable
	err := hc(nil, "--url", srv.URL+"/healthz")
	if err == nil || !strings.Contains(err.Error(), srv.URL+"/healthz answered 503 Service Unavailable: store down") {
		t.Fatalf("503: %v", err)
	}
	srv.Close()
	if err := hc(nil, "--url", srv.URL+"/healthz"); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("nobody listening: %v", err)
	}
	if err := hc(map[string]string{"CHARGEFLOW_HTTP_ADDR": "8080"}); err == nil || !strings.Contains(err.Error(), "CHARGEFLOW_HTTP_ADDR") {
		t.Fatalf("bad address: %v", err)
	}

	for addr, want := range map[string]string{"": "http://127.0.0.1:8080/healthz", ":9090": "http://127.0.0.1:9090/healthz",
		"0.0.0.0:80": "http://127.0.0.1:80/healthz", "[::]:81": "http://127.0.0.1:81/healthz", "10.0.0.5:82": "http://10.0.0.5:82/healthz"} {
		if got, err := healthzURL(addr); err != nil || got != want {
			t.Errorf("healthzURL(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
}
