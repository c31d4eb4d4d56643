// Package vafscli is the command line that the two vafs binaries share:
// the app and its exit statuses, the version, and the definitions (name,
// flags, help) of the engine's commands. cmd/vafs, the thin client, shows
// those definitions in its help and hands the commands to cmd/vafsd, the
// engine, which runs them with the very same definitions; neither copy
// of a flag can drift from the other.
//
// It imports urfave/cli and the standard library only: cmd/vafs links it,
// and must start in a few milliseconds (the root test TestThinClientDeps).
package vafscli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// Version is set at build time with
// -ldflags "-X github.com/vafs/vafs/cmd/internal/vafscli.Version=...".
var Version = "0.1.0-dev"

// App is the vafs command line with the given commands. Both binaries
// call themselves "vafs": the engine is run by vafs, and its help and
// messages speak of the commands as the user typed them.
func App(usage string, commands []*cli.Command) *cli.App {
	return &cli.App{
		Name:     "vafs",
		Usage:    usage,
		Version:  Version,
		Commands: commands,
		CommandNotFound: func(c *cli.Context, name string) {
			Exit(cli.Exit(fmt.Sprintf("unknown command %q (see vafs --help)", name), 2))
		},
		ExitErrHandler: func(c *cli.Context, err error) {
			if err != nil {
				Exit(err)
			}
		},
	}
}

// Exit prints err and exits 1, or with the status of a cli.Exit error
// (2 for usage errors).
func Exit(err error) {
	code := 1
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		code = ec.ExitCode()
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(os.Stderr, "vafs:", msg)
	}
	os.Exit(code)
}

// DefaultDataDir is /var/lib/vafs for root, $XDG_DATA_HOME/vafs otherwise.
func DefaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/vafs"
	}
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "vafs")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "share", "vafs")
}

// Unescape undoes the octal escapes of /proc/mounts and
// /proc/self/mountinfo (\040 for a space).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
