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

	"github.com/vafs/vafs/fs"
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
			pid := fs.LockHolder(data)
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
		if len(fl) >= 3 && unescape(fl[1]) == mnt && fl[2] == "fuse.vafs" {
			return unescape(fl[0]), nil
		}
	}
	return "", fmt.Errorf("%s is not a vafs mount", mnt)
}

// unescape undoes the octal escapes of /proc/mounts (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
