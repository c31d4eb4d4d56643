package main

import (
	"fmt"
	"io"
	"log"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/vafs/vafs/cachessd"
	"github.com/vafs/vafs/fs"
)

// runFsck is `vafs fsck`.
func runFsck(c *cli.Context) error {
	if c.NArg() != 0 {
		return fmt.Errorf("fsck takes no arguments; use --data DIR")
	}
	data, err := filepath.Abs(c.String("data"))
	if err != nil {
		return err
	}
	store, err := cachessd.OpenDir(filepath.Join(data, "segments"))
	if err != nil {
		return err
	}
	rep, err := fs.Check(fs.Options{DataDir: data, Store: store, Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		return err
	}
	fmt.Printf("vafs fsck %s: %d volumes, %d tree nodes, %d extents, %d block references, %d segments\n",
		data, rep.Heads, rep.Nodes, rep.Extents, rep.Blocks, rep.Segments)
	for _, p := range rep.Problems {
		fmt.Println("  PROBLEM:", p)
	}
	if len(rep.Problems) > 0 {
		return fmt.Errorf("%d problems (%d corrupt blocks, %d unreadable extents)", len(rep.Problems), rep.CorruptBlocks, rep.MissingObjects)
	}
	fmt.Println("clean")
	return nil
}
