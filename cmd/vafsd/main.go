// Command vafsd is the vafs engine: `vafs mount`, `vafs fsck` and
// `vafs debug`, the commands that open a data dir (Pebble, the block
// store) or serve a FUSE mount. Users run vafs (cmd/vafs), which replaces
// itself with vafsd for these commands (same pid, same arguments), so
// that the other commands, which only talk to a running mount, do not
// pay for linking the engine at every start. The long-lived mount
// process is the daemon: its name (comm, what ps -e and pgrep show) is
// vafsd, while its argv stays vafs's ("vafs mount ...").
//
// The commands' flags and help are cmd/internal/vafscli's, shared with
// vafs; each file here only parses, calls fs, fs/fuse and cachessd, and
// prints.
package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/vafs/vafs/cmd/internal/vafscli"
)

func main() {
	app := vafscli.App("the vafs engine: mount, fsck (run by vafs; see vafs --help)", []*cli.Command{
		vafscli.Mount(runMount),
		vafscli.Fsck(runFsck),
		vafscli.VersionCmd("vafsd"),
		vafscli.Debug(runLoopback),
	})
	if err := app.Run(os.Args); err != nil {
		vafscli.Exit(err)
	}
}
