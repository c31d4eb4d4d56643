package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vafs/vafs/cmd/internal/vafscli"
)

func umountCmd() *cli.Command {
	return &cli.Command{
		Name:      "umount",
		Usage:     "flush and unmount a vafs mount",
		ArgsUsage: "MOUNTPOINT",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("umount takes one MOUNTPOINT; see vafs umount --help")
			}
			mnt, err := filepath.Abs(c.Args().First())
			if err != nil {
				return err
			}
			data, err := vafsSource(mnt)
			if err != nil {
				return err
			}
			pid := lockHolder(data)
			if err := syscall.Unmount(mnt, 0); err != nil {
				if errors.Is(err, syscall.EBUSY) {
					return fmt.Errorf("%s is busy: a process has a file open or its working directory there (see fuser -vm %s)", mnt, mnt)
				}
				return fmt.Errorf("unmount %s: %w", mnt, err)
			}
			// The mount process flushes once the kernel lets go; wait for it
			// so that the data is durable and the data dir free on return.
			if pid > 0 {
				deadline := time.Now().Add(2 * time.Minute)
				for processAlive(pid) && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				if processAlive(pid) {
					return fmt.Errorf("unmounted %s, but the mount process %d is still flushing", mnt, pid)
				}
			}
			fmt.Printf("vafs: unmounted %s\n", mnt)
			return nil
		},
	}
}

// lockHolder is the pid in DATA/LOCK, the mount process's (docs/format.md;
// fs.LockHolder, which this binary must not link), or 0.
func lockHolder(data string) int {
	b, err := os.ReadFile(filepath.Join(data, "LOCK"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// A zombie has exited: field 3 is the state.
	f := strings.Fields(string(b))
	return len(f) < 3 || f[2] != "Z"
}

// vafsSource finds mnt in /proc/mounts and returns its data dir.
func vafsSource(mnt string) (string, error) {
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) >= 3 && vafscli.Unescape(fl[1]) == mnt && fl[2] == "fuse.vafs" {
			return vafscli.Unescape(fl[0]), nil
		}
	}
	return "", fmt.Errorf("%s is not a vafs mount", mnt)
}
