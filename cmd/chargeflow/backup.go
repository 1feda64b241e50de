package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	boltstore "github.com/chargeflow/chargeflow/store/bolt"
)

// chargeflow backup --to FILE (docs/contract.md §5, docs/operations.md
// "Backup and restore"): a consistent copy of the embedded store. A running
// serve holds the bbolt file with an exclusive lock, so it makes the copy:
// it listens on a Unix socket in the data directory (mode 0600) and streams
// the store from one read transaction to whoever asks. With no serve
// running, backup opens the file read-only itself. Either way the copy is
// written beside the target, fsynced, checked page by page, and renamed.

func init() { commands["backup"] = runBackup }

// backupSocket is the socket's name inside CHARGEFLOW_DATA_DIR.
const backupSocket = "backup.sock"

// The exchange on the socket: the client sends "backup\n"; serve answers
// "ok <size>\n" and exactly size bytes of the store, or "error <text>\n".
const backupRequest = "backup"

func runBackup(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("backup", flag.ContinueOnError)
	fset.SetOutput(stderr)
	to := fset.String("to", "", "the file to write the copy to (required; replaced only once the copy is whole and checked)")
	dataDir := fset.String("data-dir", simOrEnv(getenv("CHARGEFLOW_DATA_DIR"), "./data"), "the embedded store's directory (env CHARGEFLOW_DATA_DIR)")
	fset.Usage = func() {
		fmt.Fprintln(stderr, "usage: chargeflow backup --to FILE [--data-dir DIR]")
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		return err
	}
	if *to == "" || fset.NArg() > 0 {
		fset.Usage()
		return errors.New("backup: --to FILE is required")
	}
	if getenv("CHARGEFLOW_REDIS_URL") != "" {
		return errors.New("backup: CHARGEFLOW_REDIS_URL is set: this copies the embedded store only; back Redis up with its own persistence (RDB snapshots, AOF)")
	}
	target, err := filepath.Abs(*to)
	if err != nil {
		return fmt.Errorf("backup: --to: %w", err)
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return fmt.Errorf("backup: --data-dir: %w", err)
	}
	if target == filepath.Join(dir, boltstore.FileName) {
		return errors.New("backup: --to names the store itself")
	}
	var size int64
	check := func(tmp string) error {
		n, err := boltstore.Verify(tmp)
		if err == nil {
			fmt.Fprintf(stdout, "backup: %s: %d bytes, %d sessions", target, size, n)
		}
		return err
	}
	conn, err := net.DialTimeout("unix", filepath.Join(dir, backupSocket), 5*time.Second)
	switch {
	case err == nil:
		defer conn.Close()
		err = boltstore.WriteFileAtomic(target, func(w io.Writer) error {
			n, err := receiveBackup(conn, w)
			size = n
			return err
		}, check)
		if err != nil {
			return fmt.Errorf("backup from the running service: %w", err)
		}
		fmt.Fprintln(stdout, ", copied by the running service")
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED):
		// No serve on this directory (or one killed, leaving its socket).
		err = boltstore.SnapshotDir(dir, 2*time.Second, func(n int64, src io.WriterTo) error {
			size = n
			return boltstore.WriteFileAtomic(target, func(w io.Writer) error { _, err := src.WriteTo(w); return err }, check)
		})
		if err != nil {
			return fmt.Errorf("backup: %w (a running serve answers on %s; is it serving this data directory?)", err, filepath.Join(dir, backupSocket))
		}
		fmt.Fprintln(stdout, ", copied from the store file (no service running)")
	default:
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

// receiveBackup asks serve for the store and copies it to w.
func receiveBackup(conn net.Conn, w io.Writer) (int64, error) {
	if _, err := io.WriteString(conn, backupRequest+"\n"); err != nil {
		return 0, err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("no answer: %w", err)
	}
	line = strings.TrimSpace(line)
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		return 0, errors.New(msg)
	}
	sizeText, ok := strings.CutPrefix(line, "ok ")
	size, err := strconv.ParseInt(sizeText, 10, 64)
	if !ok || err != nil || size <= 0 {
		return 0, fmt.Errorf("unexpected answer %q", line)
	}
	n, err := io.CopyN(w, r, size)
	if err != nil {
		return n, fmt.Errorf("copy cut short at %d of %d bytes: %w", n, size, err)
	}
	return n, nil
}

// backupServer is serve's side: a Unix socket in the data directory.
type backupServer struct {
	ln    *net.UnixListener
	store *boltstore.Store
	log   *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex // guards conns
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// startBackupSocket listens on <dir>/backup.sock. Serve holds the store's
// lock, so a socket file already there is a dead serve's: it is replaced.
// Failing to listen (a path too long for a socket, say) is logged and serve
// goes on: only online backups are lost.
func (a *app) startBackupSocket(dir string, st *boltstore.Store) {
	path := filepath.Join(dir, backupSocket)
	_ = os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		a.log.Warn("backup socket not available: chargeflow backup cannot copy the store while serve runs", "path", path, "err", err)
		return
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		a.log.Warn("backup socket not available", "path", path, "err", err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &backupServer{ln: ln, store: st, log: a.log.With("component", "backup"), ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.serve()
	a.onClose(b.close)
}

func (b *backupServer) serve() {
	defer b.wg.Done()
	for {
		conn, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns[conn] = struct{}{}
		b.wg.Add(1)
		b.mu.Unlock()
		go func() {
			defer b.wg.Done()
			defer func() { b.mu.Lock(); delete(b.conns, conn); b.mu.Unlock(); conn.Close() }()
			b.handle(conn)
		}()
	}
}

func (b *backupServer) handle(conn net.Conn) {
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != backupRequest {
		fmt.Fprintf(conn, "error unknown request %q\n", strings.TrimSpace(line))
		return
	}
	began := time.Now()
	var size int64
	err = b.store.Snapshot(b.ctx, func(n int64, src io.WriterTo) error {
		size = n
		if _, err := fmt.Fprintf(conn, "ok %d\n", n); err != nil {
			return err
		}
		_, err := src.WriteTo(conn)
		return err
	})
	if err != nil {
		b.log.Error("backup failed", "err", err)
		fmt.Fprintf(conn, "error %v\n", err) // only seen when nothing was sent yet
		return
	}
	b.log.Info("backup copied", "bytes", size, "took", time.Since(began).Round(time.Millisecond).String())
}

// close stops accepting (the socket file goes), cuts copies in progress and waits.
func (b *backupServer) close() {
	b.cancel()
	_ = b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}
