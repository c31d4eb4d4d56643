package vafscli

import (
	"github.com/urfave/cli/v2"
)

// The engine's commands: what opens the data dir (Pebble, the block
// store) or mounts with go-fuse. Each takes the action that runs it:
// cmd/vafsd's, or cmd/vafs's hand-over to cmd/vafsd.

// Mount is `vafs mount`.
func Mount(action cli.ActionFunc) *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount a data dir (foreground; --background to detach)",
		ArgsUsage: "MOUNTPOINT",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data", Value: DefaultDataDir(), Usage: "data dir (metadata and blocks)"},
			&cli.BoolFlag{Name: "background", Usage: "detach once the mount answers; logs go to DATA/vafs.log"},
			&cli.BoolFlag{Name: "debug", Usage: "log every FUSE request"},
			&cli.BoolFlag{Name: "writeback-cache", Usage: "let the kernel cache writes (CAP_WRITEBACK_CACHE)"},
			&cli.StringFlag{Name: "write-cache", Value: "auto", Usage: "memory for written blocks until the next commit (SIZE like 2G, 0 to write through; auto: 1/8 of RAM, at most 4G)"},
			&cli.StringFlag{Name: "dirty-expire", Value: "auto", Usage: "how long written blocks may wait in that memory before the background commit (DURATION like 30s; auto: the host's vm.dirty_expire_centisecs); fsync commits at once"},
			&cli.BoolFlag{Name: "fsync-journal", Value: true, Usage: "an fsync after a few writes (up to 1 MiB) writes them as one synced metadata record (one device flush) instead of a segment sync and a commit; --fsync-journal=false turns it off"},
		},
		Action: action,
	}
}

// Fsck is `vafs fsck`.
func Fsck(action cli.ActionFunc) *cli.Command {
	return &cli.Command{
		Name:  "fsck",
		Usage: "check an unmounted data dir without changing it: counts against the trees, every block's checksum, unreferenced and missing segments, counters",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data", Value: DefaultDataDir(), Usage: "data dir (must not be mounted)"},
			&cli.BoolFlag{Name: "repair", Usage: "fix what a walk of the trees decides: rewrite wrong counts, remove this host's unreferenced segments, raise counters; prints each change"},
		},
		Action: action,
	}
}

// Debug is `vafs debug`, hidden: tools for developers. loopback runs
// `vafs debug loopback SRC MNT`.
func Debug(loopback cli.ActionFunc) *cli.Command {
	return &cli.Command{
		Name:   "debug",
		Usage:  "tools for developers",
		Hidden: true,
		Subcommands: []*cli.Command{{
			Name:      "loopback",
			Usage:     "mount a bare go-fuse loopback of SRC at MNT (passthrough off), the benchmark yardstick",
			ArgsUsage: "SRC MNT",
			Action:    loopback,
		}},
	}
}
