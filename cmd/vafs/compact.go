package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/vafs/vafs/fs/control/wire"
)

func compactCmd() *cli.Command {
	return &cli.Command{
		Name:         "compact",
		Usage:        "run one compaction pass now on the vafs mount holding PATH (the mount runs one every 30 s)",
		ArgsUsage:    "PATH",
		OnUsageError: onUsageError,
		Action:       runCompact,
	}
}

func runCompact(c *cli.Context) error {
	a, err := args(c, 1, 1)
	if err != nil {
		return err
	}
	return onMount(a[0], fmt.Sprintf("compact %s", a[0]), func(at onVafs, cl *wire.Client) error {
		st, err := cl.Compact()
		if err != nil {
			return err
		}
		fmt.Printf("compacted %d segments, moved %d blocks, freed %d bytes\n", st.Segments, st.Moved, st.Freed)
		return nil
	})
}
