package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/vafs/vafs/fs/fuse"
)

// runLoopback is `vafs debug loopback SRC MNT`.
func runLoopback(c *cli.Context) error {
	if c.NArg() != 2 {
		return fmt.Errorf("loopback takes SRC and MNT")
	}
	srv, err := fuse.MountLoopback(c.Args().Get(0), c.Args().Get(1))
	if err != nil {
		return err
	}
	fmt.Printf("vafs: loopback mounted %s on %s\n", c.Args().Get(0), c.Args().Get(1))
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for range sigs {
			if err := srv.Unmount(); err != nil {
				fmt.Fprintln(os.Stderr, "vafs: unmount:", err)
			}
		}
	}()
	srv.Wait()
	return nil
}
