//go:build !linux

package main

import (
	"errors"
	"syscall"
)

// scaleProcAttr: no parent death signal outside Linux; the scenario stops
// its service itself.
func scaleProcAttr() *syscall.SysProcAttr { return nil }

// procUsage: the scale scenario reads a process's memory and CPU from
// Linux's /proc.
func procUsage(int) (rss, cpu float64, err error) {
	return 0, 0, errors.New("the scale scenario reads /proc: Linux only")
}

func selfCPU() float64 { return 0 }
