package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	boltstore "github.com/chargeflow/chargeflow/store/bolt"
)

// backup runs chargeflow backup --to file with the stack's environment.
func (s *stack) backup(file string) (string, error) {
	out, errOut := &syncBuffer{}, &syncBuffer{}
	err := run(context.Background(), []string{"backup", "--to", file}, s.getenv, out, errOut)
	return out.String() + errOut.String(), err
}

// TestBackupWhileServing: copies taken while serve runs under load
// (sessions charging, others being created and cancelled) hold every
// session created before the copy began, and a service started on a copy
// serves them.
func TestBackupWhileServing(t *testing.T) {
	s := newStack(t, "embedded", 4)
	charging := []view{s.charge("CP-1", 5000), s.charge("CP-2", 5000), s.charge("CP-3", 5000)}

	// Load: CP-4's sessions created and cancelled in a loop, while the
	// three others send meter values.
	var (
		mu      sync.Mutex
		created []string
		loadErr error
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	if err := s.fleet.Charger("CP-4").Plug(1); err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			code, body := s.do("POST", "/v1/sessions", appToken, map[string]any{"charger_id": "CP-4", "connector": 1, "openid": "o-load",
				"max_amount_fen": 500}, "Idempotency-Key", fmt.Sprintf("load-%d", i))
			if code == 409 { // the last one's cancellation has not freed the connector yet
				time.Sleep(10 * time.Millisecond)
				continue
			}
			var v view
			if code != 201 || json.Unmarshal(body, &v) != nil {
				mu.Lock()
				loadErr = fmt.Errorf("create: %d %s", code, body)
				mu.Unlock()
				return
			}
			mu.Lock()
			created = append(created, v.ID)
			mu.Unlock()
			if code, body := s.do("POST", "/v1/sessions/"+v.ID+"/cancel", appToken, nil); code != 200 && code != 202 {
				mu.Lock()
				loadErr = fmt.Errorf("cancel: %d %s", code, body)
				mu.Unlock()
				return
			}
		}
	}()
	s.waitFor("load running", func() bool { mu.Lock(); defer mu.Unlock(); return len(created) >= 3 || loadErr != nil })

	dir := t.TempDir()
	var copies []string
	var before [][]string
	for i := range 3 {
		mu.Lock()
		before = append(before, append([]string(nil), created...))
		mu.Unlock()
		file := filepath.Join(dir, fmt.Sprintf("copy-%d.db", i))
		out, err := s.backup(file)
		if err != nil {
			t.Fatalf("backup %d: %v\n%s", i, err, out)
		}
		if !strings.Contains(out, "copied by the running service") {
			t.Fatalf("backup %d did not come from the running service: %s", i, out)
		}
		copies = append(copies, file)
	}
	stop.Store(true)
	wg.Wait()
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	if fi, err := os.Stat(copies[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("copy: %v, mode %v", err, fi.Mode())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	t.Logf("%d sessions created and cancelled under load; the copies began after %d, %d, %d", len(created), len(before[0]), len(before[1]), len(before[2]))

	// A service on the last copy has every session created before it began.
	last := len(copies) - 1
	dataDir := t.TempDir()
	if err := os.Rename(copies[last], filepath.Join(dataDir, boltstore.FileName)); err != nil {
		t.Fatal(err)
	}
	s2 := newStackWith(t, "embedded", 0, "", "CHARGEFLOW_DATA_DIR", dataDir)
	got := s2.listAll()
	want := append(append([]string(nil), before[last]...), charging[0].ID, charging[1].ID, charging[2].ID)
	for _, id := range want {
		if _, ok := got[id]; !ok {
			t.Fatalf("session %s (created before the copy) is not in the copy; the copy has %d sessions", id, len(got))
		}
	}
	for _, v := range charging {
		if st := got[v.ID]; st == "created" || st == "" {
			t.Fatalf("charging session %s is %q in the copy", v.ID, st)
		}
	}
}

// TestBackupNoServe: with no serve running the store file is copied
// directly, even when a killed serve left its socket behind; a store locked
// by a process that does not answer is refused with a clear message.
func TestBackupNoServe(t *testing.T) {
	s := newStack(t, "embedded", 1)
	v := s.create("CP-1", 500)
	s.stop()
	dir := s.env["CHARGEFLOW_DATA_DIR"]
	sock := filepath.Join(dir, backupSocket)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("serve left its backup socket after a clean stop: %v", err)
	}
	// A killed serve's socket: nobody listens on it.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	file := filepath.Join(t.TempDir(), "copy.db")
	out, err := s.backup(file)
	if err != nil || !strings.Contains(out, "copied from the store file") || !strings.Contains(out, "1 sessions") {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	if n, err := boltstore.Verify(file); err != nil || n != 1 {
		t.Fatalf("copy: %d sessions, %v", n, err)
	}
	_ = v

	// Locked by a process that does not answer (here: this one).
	bs, err := boltstore.Open(dir, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	if out, err := s.backup(filepath.Join(t.TempDir(), "x.db")); err == nil || !strings.Contains(err.Error(), "locked by a running process") {
		t.Fatalf("backup of a locked store: %v\n%s", err, out)
	}

	// Usage errors.
	if err := run(context.Background(), []string{"backup"}, s.getenv, &syncBuffer{}, &syncBuffer{}); err == nil || !strings.Contains(err.Error(), "--to FILE is required") {
		t.Fatalf("no --to: %v", err)
	}
	redis := func(k string) string {
		if k == "CHARGEFLOW_REDIS_URL" {
			return "redis://127.0.0.1:1/0"
		}
		return s.getenv(k)
	}
	if err := run(context.Background(), []string{"backup", "--to", file}, redis, &syncBuffer{}, &syncBuffer{}); err == nil || !strings.Contains(err.Error(), "CHARGEFLOW_REDIS_URL") {
		t.Fatalf("with Redis: %v", err)
	}
}
