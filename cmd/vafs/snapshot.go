package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/vafs/vafs/fs/control"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vafs/vafs/fs"
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
	return onMount(a[0], fmt.Sprintf("snapshot create %s %s", a[0], a[1]), func(at onVafs, cl *control.Client) error {
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

func toSnapshotJSON(list []fs.Snapshot) []snapshotJSON {
	out := make([]snapshotJSON, 0, len(list))
	for _, s := range list {
		j := snapshotJSON{Name: s.Name, ID: s.ID, Size: s.Size, Allocated: s.Blocks * fs.BlockSize}
		if !s.Created.IsZero() {
			t := s.Created.UTC()
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
	return onMount(a[0], fmt.Sprintf("snapshot list %s", a[0]), func(at onVafs, cl *control.Client) error {
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
			fmt.Fprintf(tw, "%s\t%s\t%d\n", s.Name, created(s.Created), s.Size)
		}
		return tw.Flush()
	})
}

func runSnapshotDelete(c *cli.Context) error {
	a, err := args(c, 2, 2)
	if err != nil {
		return err
	}
	return onMount(a[0], fmt.Sprintf("snapshot delete %s %s", a[0], a[1]), func(at onVafs, cl *control.Client) error {
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
	return onMount(a[0], fmt.Sprintf("rollback %s", a[0]), func(at onVafs, cl *control.Client) error {
		if err := cl.SnapshotRollback(at.rel, a[1], c.Bool("force")); err != nil {
			if errors.Is(err, fs.ErrBusy) {
				return fmt.Errorf("%w (stop the VM first, or --force)", err)
			}
			return err
		}
		return nil
	})
}

func printJSON(v interface{}) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
