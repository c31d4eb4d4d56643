// Command vafs mounts and manages vafs, the virtualization-aware file
// system. Each subcommand lives in its own file and only parses, calls and
// prints; the logic is in fs, fs/fuse, meta and blocks.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func app() *cli.App {
	return &cli.App{
		Name:    "vafs",
		Usage:   "a virtualization-aware file system for VM disk images",
		Version: version,
		Commands: []*cli.Command{
			mountCmd(),
			umountCmd(),
			fsckCmd(),
			versionCmd(),
			debugCmd(),
			cloneCmd(),
			snapshotCmd(),
			describeCmd(),
			dfCmd(),
			compactCmd(),
		},
		HideVersion: false,
		CommandNotFound: func(c *cli.Context, name string) {
			exit(cli.Exit(fmt.Sprintf("unknown command %q (see vafs --help)", name), 2))
		},
		ExitErrHandler: func(c *cli.Context, err error) {
			if err != nil {
				exit(err)
			}
		},
	}
}

func main() {
	if err := app().Run(os.Args); err != nil {
		exit(err)
	}
}

// exit prints err and exits 1, or with the status of a cli.Exit error
// (2 for usage errors).
func exit(err error) {
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
