package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vafs/vafs/fs/control/wire"
)

func snapshotCmd() *cli.Command {
	return &cli.Command{
		Name:  "snapshot",
		Usage: "create, list, delete and roll back to snapshots of a file on a vafs mount",
		// Reached only when the first argument is not a subcommand.
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError(c, "unknown snapshot command %q", c.Args().First())
			}
			return cli.ShowSubcommandHelp(c)
		},
		ArgsUsage: "create|list|delete|rollback ...",
		Subcommands: []*cli.Command{
			{
				Name:         "create",
				Usage:        "freeze FILE as NAME (O(1), durable on return)",
				ArgsUsage:    "FILE NAME",
				OnUsageError: onUsageError,
				Action:       runSnapshotCreate,
			},
			{
				Name:         "list",
				Usage:        "list FILE's snapshots, oldest first",
				ArgsUsage:    "FILE",
				Flags:        []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				OnUsageError: onUsageError,
				Action:       runSnapshotList,
			},
			{
				Name:         "delete",
				Usage:        "delete a snapshot; space nothing else references comes back",
				ArgsUsage:    "FILE NAME",
				OnUsageError: onUsageError,
				Action:       runSnapshotDelete,
			},
			{
				Name:      "rollback",
				Usage:     "make FILE's content and size the snapshot's (the snapshot stays)",
				ArgsUsage: "FILE NAME",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "force",
					Usage: "roll back even if the file is open for writing (the writer sees its file change under it)"}},
				OnUsageError: onUsageError,
				Action:       runSnapshotRollback,
			},
		},
	}
}

func runSnapshotCreate(c *cli.Context) error {
	a, err := args(c, 2, 2)
	if err != nil {
		return err
	}
	return onMount(a[0], fmt.Sprintf("snapshot create %s %s", a[0], a[1]), func(at onVafs, cl *wire.Client) error {
		if _, err := cl.SnapshotCreate(at.rel, a[1]); err != nil {
			return err
		}
		return nil
	})
}

// snapshotJSON is a snapshot in --json output.
type snapshotJSON struct {
	Name      string     `json:"name"`
	ID        uint64     `json:"id"`
	Created   *time.Time `json:"created"`
	Size      uint64     `json:"size"`
	Allocated uint64     `json:"allocated"`
}

func toSnapshotJSON(list []wire.Snapshot) []snapshotJSON {
	out := make([]snapshotJSON, 0, len(list))
	for _, s := range list {
		j := snapshotJSON{Name: s.Name, ID: s.ID, Size: s.Size, Allocated: s.Blocks * wire.BlockSize}
		if c := s.CreatedTime(); !c.IsZero() {
			t := c.UTC()
			j.Created = &t
		}
		out = append(out, j)
	}
	return out
}

func created(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func runSnapshotList(c *cli.Context) error {
	a, err := args(c, 1, 1, "json")
	if err != nil {
		return err
	}
	return onMount(a[0], fmt.Sprintf("snapshot list %s", a[0]), func(at onVafs, cl *wire.Client) error {
		list, err := cl.Snapshots(at.rel)
		if err != nil {
			return err
		}
		if c.Bool("json") {
			return printJSON(toSnapshotJSON(list))
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tCREATED\tSIZE")
		for _, s := range list {
			fmt.Fprintf(tw, "%s\t%s\t%d\n", s.Name, created(s.CreatedTime()), s.Size)
		}
		return tw.Flush()
	})
}

func runSnapshotDelete(c *cli.Context) error {
	a, err := args(c, 2, 2)
	if err != nil {
		return err
	}
	return onMount(a[0], fmt.Sprintf("snapshot delete %s %s", a[0], a[1]), func(at onVafs, cl *wire.Client) error {
		if err := cl.SnapshotDelete(at.rel, a[1]); err != nil {
			return err
		}
		return nil
	})
}

func runSnapshotRollback(c *cli.Context) error {
	a, err := args(c, 2, 2, "force")
	if err != nil {
		return err
	}
	return onMount(a[0], fmt.Sprintf("rollback %s", a[0]), func(at onVafs, cl *wire.Client) error {
		if err := cl.SnapshotRollback(at.rel, a[1], c.Bool("force")); err != nil {
			if wire.IsKind(err, wire.KindBusy) {
				return fmt.Errorf("%w (stop the VM first, or --force)", err)
			}
			return err
		}
		return resetKernelSize(at, cl, a[1])
	})
}

func printJSON(v interface{}) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// resetKernelSize sets the rolled-back size through the mount. On a
// --writeback-cache mount the kernel keeps its own idea of a file's size
// and ignores the server's, so after a rollback it would still show (and
// append at) the old size; a truncate to the snapshot's size, which is
// what the file already has, makes it take the new one. On other mounts
// it changes nothing.
func resetKernelSize(at onVafs, cl *wire.Client, name string) error {
	list, err := cl.Snapshots(at.rel)
	if err != nil {
		return err
	}
	for _, s := range list {
		if s.Name == name {
			return os.Truncate(filepath.Join(at.mount, at.rel), int64(s.Size))
		}
	}
	return nil // deleted since: nothing to match
}
