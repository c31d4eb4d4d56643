// Command vafs mounts and manages vafs, the virtualization-aware file
// system. Each subcommand lives in its own file and only parses, calls and
// prints; the logic is in fs, fs/fuse, meta and blocks.
package main

import (
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
		},
		HideVersion: false,
		ExitErrHandler: func(c *cli.Context, err error) {
			if err != nil {
				fmt.Fprintln(os.Stderr, "vafs:", err)
				os.Exit(1)
			}
		},
	}
}

func main() {
	if err := app().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "vafs:", err)
		os.Exit(1)
	}
}
