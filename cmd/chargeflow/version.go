package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

func init() { commands["version"] = runVersion }

// buildRevision is the VCS revision of a build made without the repository at
// hand (the Dockerfile's: go build -ldflags "-X main.buildRevision=…"); the
// build information's vcs.revision wins when there is one.
var buildRevision string

// runVersion prints what the binary was built from (docs/contract.md §5): the
// module version, the VCS revision and time, and the Go version.
func runVersion(_ context.Context, args []string, _ func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("version: unexpected argument %q", fs.Arg(0))
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	fmt.Fprint(stdout, versionText(bi))
	return nil
}

// versionText renders bi (nil: a binary without build information); what
// the build did not record is said to be unknown rather than left out.
func versionText(bi *debug.BuildInfo) string {
	version, revision, vcsTime, goVersion := "unknown", "unknown", "unknown", runtime.Version()
	if buildRevision != "" {
		revision = buildRevision
	}
	modified := false
	if bi != nil {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				vcsTime = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if modified {
		revision += " (modified)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "chargeflow %s\n", version)
	fmt.Fprintf(&b, "  revision: %s\n", revision)
	fmt.Fprintf(&b, "  time:     %s\n", vcsTime)
	fmt.Fprintf(&b, "  go:       %s %s/%s\n", goVersion, runtime.GOOS, runtime.GOARCH)
	return b.String()
}
