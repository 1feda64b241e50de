package boltstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Backups (docs/operations.md, "Backup and restore"). A copy is written from
// one read transaction, so it is the store as of one commit: every
// transition with its history, outbox tasks and indexes, or none of it.
// Writers go on meanwhile (bbolt keeps the pages the copy reads), except a
// commit that has to grow the file, which waits for the copy to finish.

// Snapshot runs fn inside one read transaction of the open store: size is
// the copy's length in bytes and src writes exactly that copy.
func (s *Store) Snapshot(ctx context.Context, fn func(size int64, src io.WriterTo) error) error {
	return s.view(ctx, func(tx *bolt.Tx) error { return fn(tx.Size(), tx) })
}

// SnapshotDir is Snapshot of the store in dir when no process has it open:
// the file is opened read-only, which fails after timeout while a serve
// holds it (its lock is exclusive).
func SnapshotDir(dir string, timeout time.Duration, fn func(size int64, src io.WriterTo) error) error {
	path := filepath.Join(dir, FileName)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("boltstore: no store to copy: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return fmt.Errorf("boltstore: open %s: the file is locked by a running process", path)
		}
		return fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error { return fn(tx.Size(), tx) })
}

// Verify opens a copy read-only, checks every page and that it is a
// chargeflow store; it returns how many sessions it holds.
func Verify(path string) (sessions int, err error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return 0, fmt.Errorf("boltstore: open copy %s: %w", path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for e := range tx.Check() {
			errs = append(errs, e)
		}
		if len(errs) > 0 {
			return fmt.Errorf("copy %s is damaged: %w", path, errors.Join(errs...))
		}
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("copy %s is not a chargeflow store (no %s bucket)", path, name)
			}
		}
		sessions = tx.Bucket(bSessions).Stats().KeyN
		return nil
	})
	return sessions, err
}

// WriteFileAtomic writes path through a temporary file beside it: fill
// writes the content, which is fsynced, then check (when not nil) is given
// the temporary file's path, and only then is it renamed over path and the
// directory fsynced. So path is either the old file or the whole new,
// checked one, even after a crash. The file's mode is 0600 (a store holds
// personal data).
func WriteFileAtomic(path string, fill func(w io.Writer) error, check func(tmp string) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = fill(f); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if check != nil {
		if err = check(tmp); err != nil {
			return err
		}
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // the rename itself is durable once the directory is
		d.Close()
	}
	return nil
}
