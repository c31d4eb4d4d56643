package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/cachessd"
	"github.com/vafs/vafs/fs"
)

// runFsck is `vafs fsck [--repair] --data DIR`. Without --repair it
// changes no byte of DIR; with it, it prints one line per change and then
// checks again. Exit status 1 when the (final) check is not clean or DIR
// is not a data dir; every message starts with "vafs fsck:".
func runFsck(c *cli.Context) error {
	if c.NArg() != 0 {
		return cli.Exit("fsck takes no arguments; use --data DIR", 2)
	}
	data, err := filepath.Abs(c.String("data"))
	if err != nil {
		return err
	}
	repair := c.Bool("repair")
	// cachessd.OpenDir creates a missing segments dir: look first, so that
	// fsck of a directory that is not a data dir creates nothing.
	var store blocks.Store = blocks.NewMemStore()
	segDir := filepath.Join(data, "segments")
	haveSegs := false
	if st, err := os.Stat(segDir); err == nil && st.IsDir() {
		if store, err = cachessd.OpenDir(segDir); err != nil {
			return fail(err)
		}
		haveSegs = true
	}
	opts := fs.Options{DataDir: data, Store: store, Logger: log.New(io.Discard, "", 0)}
	check := fs.Check
	if repair {
		check = fs.Repair
	}
	rep, err := check(opts)
	if err != nil {
		return fail(err)
	}
	if !haveSegs {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%s is missing: every block the trees reference is gone", segDir))
	}
	printReport(data, rep)
	if !repair {
		return verdict(rep)
	}
	if len(rep.Repairs) == 0 {
		fmt.Println("nothing to repair")
	}
	for _, l := range rep.Repairs {
		fmt.Println("  REPAIRED:", l)
	}
	if len(rep.Repairs) == 0 {
		return verdict(rep)
	}
	fmt.Println("checking again:")
	if rep, err = fs.Check(opts); err != nil {
		return fail(err)
	}
	if !haveSegs {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%s is missing: every block the trees reference is gone", segDir))
	}
	printReport(data, rep)
	return verdict(rep)
}

func printReport(data string, rep *fs.CheckReport) {
	sb := rep.Super
	fmt.Printf("vafs fsck %s: %d volumes, %d snapshots, %d tree nodes, %d extents, %d block references, %d segments (%d bytes)\n",
		data, rep.Heads, rep.Snapshots, rep.Nodes, rep.Extents, rep.Blocks, rep.Segments, rep.SegmentBytes)
	fmt.Printf("superblock: host %06x; next inode %d, tree node %d, generation %d, segment sequence %d, snapshot %d\n",
		sb.HostID, sb.NextIno, sb.NextNode, sb.NextGen, sb.NextSeq, sb.NextSnap)
	for _, p := range rep.Problems {
		fmt.Println("  PROBLEM:", p)
	}
	if rep.JournalRecords > 0 {
		fmt.Printf("  JOURNAL: %d fsync journal records (%d blocks) left by a crash: fsynced data the next mount applies to its volumes\n",
			rep.JournalRecords, rep.JournalBlocks)
	}
	for _, s := range rep.Unreferenced {
		switch {
		case s.Foreign: // a PROBLEM line above
		case rep.Damaged:
			fmt.Printf("  UNREFERENCED: segment %s (%d bytes): no readable tree references it, but a tree is damaged, so neither a mount nor --repair removes it\n", s.ID, s.Size)
		default:
			fmt.Printf("  UNREFERENCED: segment %s (%d bytes): no tree references it (left by a crash); the next mount or vafs fsck --repair removes it\n", s.ID, s.Size)
		}
	}
}

// verdict prints "clean" (what scripts look for) or says how many problems
// there are and exits 1.
func verdict(rep *fs.CheckReport) error {
	if !rep.Clean() {
		return fail(fmt.Errorf("%d problems (%d corrupt blocks, %d unreadable block references, %d missing segments)",
			len(rep.Problems), rep.CorruptBlocks, rep.MissingObjects, len(rep.Missing)))
	}
	var n int
	var bytes int64
	for _, s := range rep.Unreferenced {
		n++
		bytes += s.Size
	}
	if n > 0 {
		fmt.Printf("clean; %d unreferenced segment%s (%d bytes) to reclaim\n", n, plural(n), bytes)
	} else {
		fmt.Println("clean")
	}
	return nil
}

// fail prints err as "vafs fsck: ..." and exits 1.
func fail(err error) error {
	var nd *fs.NotDataDirError
	if errors.As(err, &nd) {
		err = nd // the path and the reason, without the sentinel's text
	}
	fmt.Fprintln(os.Stderr, "vafs fsck:", err)
	return cli.Exit("", 1)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
