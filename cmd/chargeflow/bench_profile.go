package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// benchProfiles are the profiles `chargeflow bench` writes when asked
// (--cpuprofile, --mutexprofile, --blockprofile), read with
// `go tool pprof -top FILE`. When the burst scenario runs they cover its
// first row's measured window only (from the confirmations to the last start
// received), not the set-up around it (the fleet's password hashing would
// fill them); otherwise the whole run. Mutex and block events are sampled
// one in one while a profile is on. See docs/bench.md.
type benchProfiles struct {
	cpu, mutex, block string
	windowed          bool // a scenario opens the window; start does nothing
	cpuFile           *os.File
	on, done          bool
}

func (p *benchProfiles) any() bool { return p.cpu != "" || p.mutex != "" || p.block != "" }

// start begins a whole-run profile (unless a scenario opens a window).
func (p *benchProfiles) start() error {
	if p.windowed {
		return nil
	}
	return p.begin()
}

// window begins the profiles for a scenario's measured window and returns
// the function that ends and writes them; only the first window is kept.
func (p *benchProfiles) window() (end func() error, err error) {
	if !p.windowed || p.on || p.done || !p.any() {
		return func() error { return nil }, nil
	}
	if err := p.begin(); err != nil {
		return nil, err
	}
	return p.stop, nil
}

func (p *benchProfiles) begin() error {
	if p.mutex != "" {
		runtime.SetMutexProfileFraction(1)
	}
	if p.block != "" {
		runtime.SetBlockProfileRate(1)
	}
	p.on = true
	if p.cpu == "" {
		return nil
	}
	f, err := os.Create(p.cpu)
	if err != nil {
		return fmt.Errorf("bench: --cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("bench: --cpuprofile: %w", err)
	}
	p.cpuFile = f
	return nil
}

// stop ends the CPU profile and writes the mutex and block profiles, once.
func (p *benchProfiles) stop() error {
	if !p.on {
		return nil
	}
	p.on, p.done = false, true
	var errs []error
	if p.cpuFile != nil {
		pprof.StopCPUProfile()
		errs = append(errs, p.cpuFile.Close())
		p.cpuFile = nil
	}
	for _, w := range []struct{ name, path string }{{"mutex", p.mutex}, {"block", p.block}} {
		if w.path == "" {
			continue
		}
		f, err := os.Create(w.path)
		if err != nil {
			errs = append(errs, fmt.Errorf("bench: --%sprofile: %w", w.name, err))
			continue
		}
		errs = append(errs, pprof.Lookup(w.name).WriteTo(f, 0), f.Close())
	}
	if p.mutex != "" {
		runtime.SetMutexProfileFraction(0)
	}
	if p.block != "" {
		runtime.SetBlockProfileRate(0)
	}
	return errors.Join(errs...)
}
