package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	boltstore "github.com/chargeflow/chargeflow/store/bolt"
)

// The scale scenario runs the service as a child process — the bench's own
// binary with `serve` and the stack's configuration in its environment —
// so that its kill -9 is real, and its memory and CPU are its own.

// scaleChildEnv marks the child: a test binary (whose os.Executable is not
// chargeflow) runs main instead of its tests when it is set (main_test.go).
const scaleChildEnv = "CHARGEFLOW_BENCH_CHILD"

// scaleChild is one `chargeflow serve` process.
type scaleChild struct {
	exe     string
	env     []string // CHARGEFLOW_* of this service
	httpURL string
	logPath string // the child's stdout and stderr

	cmd  *exec.Cmd
	done chan struct{} // closed once the process was waited for
	err  error         // its exit, after done
}

// scaleChildEnvironment is the bench's environment without any
// CHARGEFLOW_* variable (the child's configuration is the bench's alone),
// plus cfg.
func scaleChildEnvironment(cfg map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHARGEFLOW_") {
			env = append(env, kv)
		}
	}
	for k, v := range cfg {
		env = append(env, k+"="+v)
	}
	return append(env, scaleChildEnv+"=1")
}

// start execs the service; its output goes to logPath (appended: a
// restart writes after the first run).
func (c *scaleChild) start() error {
	out, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close() // the child holds its own copy
	cmd := exec.Command(c.exe, "serve")
	cmd.Env, cmd.Stdout, cmd.Stderr = c.env, out, out
	cmd.SysProcAttr = scaleProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s serve: %w", c.exe, err)
	}
	c.cmd, c.done = cmd, make(chan struct{})
	go func() { c.err = cmd.Wait(); close(c.done) }()
	return nil
}

func (c *scaleChild) pid() int { return c.cmd.Process.Pid }

// running reports whether the process has not exited.
func (c *scaleChild) running() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process.
func (c *scaleChild) kill() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// stop asks the process to shut down (SIGTERM) and kills it after 15 s.
func (c *scaleChild) stop() {
	if c.cmd == nil || !c.running() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		c.kill()
	}
}

// waitOK polls path until it answers 200, every 5 ms; it fails when the
// process exits or ctx ends.
func (c *scaleChild) waitOK(ctx context.Context, hc *http.Client, path string, limit time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.httpURL+path, nil)
		if resp, err := hc.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Now(), nil
			}
		}
		select {
		case <-c.done:
			return time.Time{}, fmt.Errorf("the service exited before %s answered 200: %v%s", path, c.err, c.logTail())
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s did not answer 200 within %s%s", path, limit, c.logTail())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// logTail is the end of the child's output, for an error message.
func (c *scaleChild) logTail() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "; the service's last output:\n" + string(b)
}

// logCounts counts the WARN and ERROR lines the child logged.
func (c *scaleChild) logCounts() (warn, errs int) {
	f, err := os.Open(c.logPath)
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case bytes.Contains(line, []byte("level=WARN")):
			warn++
		case bytes.Contains(line, []byte("level=ERROR")):
			errs++
		}
	}
	return warn, errs
}

// scaleAPI is an HTTP client of the child's API.
type scaleAPI struct {
	hc       *http.Client
	base     string // the child's URL
	appToken string
	opToken  string
}

// call sends a JSON request with the operator's token (app: the app's)
// and decodes a 2xx answer into out (when not nil); it returns the body.
func (a *scaleAPI) call(ctx context.Context, method, path string, app bool, headers map[string]string, in, out any) ([]byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return nil, err
	}
	tok := a.opToken
	if app {
		tok = a.appToken
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return b, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return b, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return b, nil
}

// scaleStats is what the bench reads of GET /v1/stats.
type scaleStats struct {
	Sessions map[string]int `json:"sessions"`
	Outbox   struct {
		Pending int `json:"pending"`
		DueNow  int `json:"due_now"`
	} `json:"outbox"`
}

// heapInuse reads go_memstats_heap_inuse_bytes from the child's /metrics.
func (a *scaleAPI) heapInuse(ctx context.Context) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/metrics", nil)
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, errors.New("no go_memstats_heap_inuse_bytes in /metrics")
}

// boltFileSize is the size of the embedded store's file in dir.
func boltFileSize(dir string) float64 {
	fi, err := os.Stat(filepath.Join(dir, boltstore.FileName))
	if err != nil {
		return 0
	}
	return float64(fi.Size())
}
