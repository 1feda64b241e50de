package boltstore_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/fsm"
	"github.com/chargeflow/chargeflow/store"
	boltstore "github.com/chargeflow/chargeflow/store/bolt"
	"github.com/chargeflow/chargeflow/store/storetest"
)

// crashChildDir, when set, makes TestGroupCommitKillDashNine the writing
// child process, on the store in that directory.
const crashChildDir = "CHARGEFLOW_BOLT_CRASH_CHILD_DIR"

const crashWriters = 32

// A process writing from many goroutines at once (so the writes share
// transactions) is killed with SIGKILL; every write it had acknowledged is
// in the store after the reopen.
func TestGroupCommitKillDashNine(t *testing.T) {
	if dir := os.Getenv(crashChildDir); dir != "" {
		crashChild(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestGroupCommitKillDashNine$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildDir+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]int64{} // session → highest version acknowledged
	marks := map[string]bool{}
	n, commits := 0, 0
	sc := bufio.NewScanner(out)
	for n < 600 && sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "commit":
			v, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			acked[f[1]] = max(acked[f[1]], v)
			commits++
		case len(f) == 2 && f[0] == "mark":
			marks[f[1]] = true
		default:
			t.Fatalf("child said %q", sc.Text())
		}
		n++
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if n < 600 {
		t.Fatalf("child stopped after %d acknowledgements: %v", n, sc.Err())
	}

	s := openAt(t, dir)
	defer s.Close()
	ctx := t.Context()
	for id, v := range acked {
		got, err := s.GetSession(ctx, id)
		if err != nil || got.Version < v {
			t.Errorf("%s: version %d (%v) after a commit to %d was acknowledged", id, got.Version, err, v)
		}
	}
	for k := range marks {
		if first, err := s.MarkProcessed(ctx, "crash", k, time.Hour); err != nil || first {
			t.Errorf("mark %s acknowledged, then lost (%v)", k, err)
		}
	}
	t.Logf("%d commits (%d sessions) and %d marks acknowledged before the kill", commits, len(acked), len(marks))
}

// crashChild commits and marks from crashWriters goroutines until killed,
// printing each acknowledgement once the store has answered.
func crashChild(dir string) {
	s, err := boltstore.Open(dir, boltstore.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx := context.Background()
	var mu sync.Mutex
	ack := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", a...)
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var wg sync.WaitGroup
	for w := range crashWriters {
		wg.Go(func() {
			id := fmt.Sprintf("c%02d", w)
			sess := storetest.Session(id, "CP"+id, 1, storetest.T0)
			if err := s.CreateSession(ctx, store.Commit{Session: sess}); err != nil {
				fail(err)
			}
			sess.Version = 1
			for i := 0; ; i++ {
				n := sess.Clone()
				n.Seq = int64(i + 1)
				err := s.Commit(ctx, store.Commit{ExpectedVersion: sess.Version, Session: n,
					History: []fsm.HistoryEntry{{At: storetest.T0, From: n.State, To: n.State, Event: fsm.EvMeter, By: fsm.ByCharger}},
					Effects: []fsm.Effect{{ID: fmt.Sprintf("%s/%d", id, i), Kind: fsm.EffQueryOrder, Session: id, DueAt: storetest.T0}}})
				if err != nil {
					fail(err)
				}
				sess = n
				sess.Version++
				ack("commit %s %d", id, sess.Version)
				key := fmt.Sprintf("%s-%d", id, i)
				if _, err := s.MarkProcessed(ctx, "crash", key, time.Hour); err != nil {
					fail(err)
				}
				ack("mark %s", key)
			}
		})
	}
	wg.Wait()
}
