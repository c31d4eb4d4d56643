// Command vafs is the vafs command line. It is the thin half of two
// binaries: the commands that talk to a running mount through its control
// socket (clone, snapshot, describe, df, compact) and umount and version
// run here; mount, fsck and debug, which open a data dir or serve FUSE,
// are handed to the engine, vafsd (cmd/vafsd), with syscall.Exec. vafs
// links only urfave/cli, msgpack and the control socket's client
// (fs/control/wire), so that it starts in a few milliseconds: a clone is
// a millisecond of work in the mount, and the engine's packages would
// cost ~20 ms of start-up per command (the root test TestThinClientDeps
// keeps it so).
//
// Each subcommand lives in its own file and only parses, calls and prints.
package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/vafs/vafs/cmd/internal/vafscli"
	_ "github.com/vafs/vafs/cmd/internal/vafscli/oneproc" // one P from the start (see there)
)

func app() *cli.App {
	return vafscli.App("a virtualization-aware file system for VM disk images", []*cli.Command{
		vafscli.Mount(runEngine),
		umountCmd(),
		vafscli.Fsck(runEngine),
		vafscli.VersionCmd("vafs"),
		vafscli.Debug(runEngine),
		cloneCmd(),
		snapshotCmd(),
		describeCmd(),
		dfCmd(),
		compactCmd(),
	})
}

func main() {
	if err := app().Run(os.Args); err != nil {
		vafscli.Exit(err)
	}
}
