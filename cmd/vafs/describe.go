package main

import (
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/vafs/vafs/fs/control/wire"
)

func describeCmd() *cli.Command {
	return &cli.Command{
		Name:         "describe",
		Usage:        "show a file's size, allocation, sharing, origin and snapshots",
		ArgsUsage:    "FILE",
		Flags:        []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON (sizes in bytes)"}},
		OnUsageError: onUsageError,
		Action:       runDescribe,
	}
}

// describeJSON is describe's --json output (docs/cli-snapshots.md).
type describeJSON struct {
	Path         string         `json:"path"`
	Ino          uint64         `json:"ino"`
	Size         uint64         `json:"size"`
	Allocated    uint64         `json:"allocated"`
	Unique       uint64         `json:"unique"`
	Shared       uint64         `json:"shared"`
	SnapshotOnly uint64         `json:"snapshot_only"`
	Origin       string         `json:"origin"`
	Snapshots    []snapshotJSON `json:"snapshots"`
}

func runDescribe(c *cli.Context) error {
	a, err := args(c, 1, 1, "json")
	if err != nil {
		return err
	}
	return onMount(a[0], fmt.Sprintf("describe %s", a[0]), func(at onVafs, cl *wire.Client) error {
		d, err := cl.Describe(at.rel)
		if err != nil {
			return err
		}
		path := filepath.Join(at.mount, at.rel)
		if c.Bool("json") {
			return printJSON(describeJSON{Path: path, Ino: d.Ino, Size: d.Size, Allocated: d.Allocated, Unique: d.Unique,
				Shared: d.Shared, SnapshotOnly: d.SnapshotOnly, Origin: d.Origin, Snapshots: toSnapshotJSON(d.Snapshots)})
		}
		origin := d.Origin
		if origin == "" {
			origin = "-"
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "path\t%s\n", path)
		fmt.Fprintf(tw, "size\t%s\n", human(d.Size))
		fmt.Fprintf(tw, "allocated\t%s\n", human(d.Allocated))
		fmt.Fprintf(tw, "unique\t%s\n", human(d.Unique))
		fmt.Fprintf(tw, "shared\t%s\n", human(d.Shared))
		fmt.Fprintf(tw, "snapshot-only\t%s\n", human(d.SnapshotOnly))
		fmt.Fprintf(tw, "origin\t%s\n", origin)
		fmt.Fprintf(tw, "snapshots\t%d\n", len(d.Snapshots))
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(d.Snapshots) == 0 {
			return nil
		}
		fmt.Println()
		tw = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tCREATED\tSIZE")
		for _, s := range d.Snapshots {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, created(s.CreatedTime()), human(s.Size))
		}
		return tw.Flush()
	})
}
