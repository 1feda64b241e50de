//go:build !linux

package testenv

import "syscall"

// childAttr: no parent death signal outside Linux; TestMain's StopShared
// and the tests' cleanups stop the servers.
func childAttr() *syscall.SysProcAttr { return nil }
