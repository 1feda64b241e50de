package testenv

import "syscall"

// childAttr makes a server die with the test binary (SIGKILL when its
// parent goes), so a test killed by its timeout leaves nothing running.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
