package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

func cloneCmd() *cli.Command {
	return &cli.Command{
		Name:  "clone",
		Usage: "instant copy of a file, a directory tree or a snapshot (MOUNT/.snapshots/<file>/<name>) on the same vafs mount",
		Description: "Files share every block (O(1)); directories are cloned recursively. DST must not exist;\n" +
			"its parent must. Durable on return.",
		ArgsUsage:    "SRC DST",
		OnUsageError: onUsageError,
		Action:       runClone,
	}
}

func runClone(c *cli.Context) error {
	a, err := args(c, 2, 2)
	if err != nil {
		return err
	}
	fail := func(err error) error { return fmt.Errorf("clone %s %s: %w", a[0], a[1], err) }
	src, err := locate(a[0])
	if err != nil {
		return fail(err)
	}
	dst, err := locateNew(a[1])
	if err != nil {
		return fail(err)
	}
	if src.dataDir != dst.dataDir { // one data dir is one mount (its lock), whatever the bind mounts
		return fail(fmt.Errorf("%s is on %s and %s on %s: a clone stays on its mount", a[0], src.mount, a[1], dst.mount))
	}
	cl, err := dial(src)
	if err != nil {
		return fail(err)
	}
	defer cl.Close()
	if _, err := cl.Clone(src.rel, dst.rel); err != nil {
		return fail(err)
	}
	return nil
}
