package session

import "github.com/chargeflow/chargeflow/store"

// SetAfterLeasedCommit sets the immediate path's hook (immediate.go): f is
// called with the tasks a commit was granted, before they are performed, and
// false drops them, as a process that dies right after its commit would.
// Set it before Run.
func SetAfterLeasedCommit(e *Engine, f func(granted []store.Task) bool) { e.imm.afterCommit = f }
