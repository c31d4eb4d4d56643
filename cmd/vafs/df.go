package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

func dfCmd() *cli.Command {
	return &cli.Command{
		Name:         "df",
		Usage:        "logical, physical and shared space of a vafs mount (default: the only one)",
		ArgsUsage:    "[PATH]",
		Flags:        []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON (bytes)"}},
		OnUsageError: onUsageError,
		Action:       runDF,
	}
}

// dfJSON is df's --json output (docs/cli-snapshots.md).
type dfJSON struct {
	Files           int    `json:"files"`
	Snapshots       int    `json:"snapshots"`
	Logical         uint64 `json:"logical"`
	SnapshotLogical uint64 `json:"snapshot_logical"`
	Physical        uint64 `json:"physical"`
	Saved           uint64 `json:"saved"`
	Stored          uint64 `json:"stored"`
	Metadata        uint64 `json:"metadata"`
	Segments        int    `json:"segments"`
}

// theMount is the mount df and compact work on: PATH's, or the only one.
func theMount(a []string) (onVafs, error) {
	if len(a) == 1 {
		return locate(a[0])
	}
	ms, err := vafsMounts()
	if err != nil {
		return onVafs{}, err
	}
	switch len(ms) {
	case 0:
		return onVafs{}, fmt.Errorf("no vafs mount")
	case 1:
		return ms[0], nil
	}
	var pts []string
	for _, m := range ms {
		pts = append(pts, m.mount)
	}
	return onVafs{}, fmt.Errorf("%d vafs mounts (%s): name one", len(ms), strings.Join(pts, ", "))
}

func runDF(c *cli.Context) error {
	a, err := args(c, 0, 1, "json")
	if err != nil {
		return err
	}
	fail := func(err error) error { return fmt.Errorf("df %s: %w", strings.Join(a, " "), err) }
	if len(a) == 0 {
		fail = func(err error) error { return fmt.Errorf("df: %w", err) }
	}
	at, err := theMount(a)
	if err != nil {
		return fail(err)
	}
	cl, err := dial(at)
	if err != nil {
		return fail(err)
	}
	defer cl.Close()
	u, err := cl.Usage()
	if err != nil {
		return fail(err)
	}
	if c.Bool("json") {
		return printJSON(dfJSON{Files: u.Files, Snapshots: u.Snapshots, Logical: u.Logical, SnapshotLogical: u.SnapshotLogical,
			Physical: u.Physical, Saved: u.Saved, Stored: u.Stored, Metadata: u.Metadata, Segments: u.Segments})
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "mount\t%s (data %s)\n", at.mount, at.dataDir)
	fmt.Fprintf(tw, "files\t%d\n", u.Files)
	fmt.Fprintf(tw, "snapshots\t%d\n", u.Snapshots)
	fmt.Fprintf(tw, "logical\t%s\tbytes mapped by files\n", human(u.Logical))
	fmt.Fprintf(tw, "snapshot logical\t%s\tbytes mapped by snapshots\n", human(u.SnapshotLogical))
	fmt.Fprintf(tw, "physical\t%s\tdistinct live blocks\n", human(u.Physical))
	fmt.Fprintf(tw, "saved by sharing\t%s\n", human(u.Saved))
	fmt.Fprintf(tw, "stored\t%s\tsegment files, %d segments (dead blocks until compacted)\n", human(u.Stored), u.Segments)
	fmt.Fprintf(tw, "metadata\t%s\n", human(u.Metadata))
	return tw.Flush()
}
