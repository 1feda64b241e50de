//go:build unix

package charger

import (
	"os"
	"syscall"
)

// inode is the file's inode number: a file replaced by rename has a new one
// even when its size and modification time are the same.
func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}
