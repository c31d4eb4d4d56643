package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
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
	fail := func(err error) error { return fmt.Errorf("compact %s: %w", a[0], err) }
	at, err := locate(a[0])
	if err != nil {
		return fail(err)
	}
	cl, err := dial(at)
	if err != nil {
		return fail(err)
	}
	defer cl.Close()
	st, err := cl.Compact()
	if err != nil {
		return fail(err)
	}
	fmt.Printf("compacted %d segments, moved %d blocks, freed %d bytes\n", st.Segments, st.Moved, st.Freed)
	return nil
}
