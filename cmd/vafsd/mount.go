package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vafs/vafs/cachessd"
	"github.com/vafs/vafs/cmd/internal/vafscli"
	"github.com/vafs/vafs/fs"
	"github.com/vafs/vafs/fs/control"
	"github.com/vafs/vafs/fs/fuse"
)

const readyEnv = "VAFS_READY_FD"

// runMount is `vafs mount`.
func runMount(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("mount takes one MOUNTPOINT (got %d arguments); see vafs mount --help", c.NArg())
	}
	mnt, err := filepath.Abs(c.Args().First())
	if err != nil {
		return err
	}
	data, err := filepath.Abs(c.String("data"))
	if err != nil {
		return err
	}
	if err := checkMountpoint(mnt); err != nil {
		return err
	}
	wcache, err := parseCacheSize(c.String("write-cache"))
	if err != nil {
		return err
	}
	expire, err := parseDirtyExpire(c.String("dirty-expire"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return fmt.Errorf("data dir %s cannot be created: %w", data, err)
	}
	if c.Bool("background") {
		return background(data, mnt)
	}
	ready := readyPipe()
	fail := func(err error) error {
		if ready != nil {
			fmt.Fprintf(ready, "%v\n", err)
			ready.Close()
		}
		return err
	}
	lg := log.New(os.Stderr, "vafs: ", log.LstdFlags)
	startPprof(lg)
	store, err := cachessd.OpenDir(filepath.Join(data, "segments"))
	if err != nil {
		return fail(fmt.Errorf("data dir %s cannot be written: %w", data, err))
	}
	f, err := fs.Open(fs.Options{DataDir: data, Store: store, Logger: lg, WriteCache: wcache, DirtyExpire: expire,
		NoFsyncJournal: !c.Bool("fsync-journal")})
	if err != nil {
		return fail(err)
	}
	// Catch SIGINT/SIGTERM before the mount exists: one that arrived
	// between the mount and a later signal.Notify would kill the process
	// with the default action and leave the mount behind. A signal caught
	// before the loop below starts waits in the channel.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	srv, err := fuse.Mount(f, mnt, fuse.Options{FsName: data, Debug: c.Bool("debug"), WritebackCache: c.Bool("writeback-cache"),
		AllowOther: os.Geteuid() == 0, Logger: lg, NoPollHack: true})
	if err != nil {
		f.Close()
		return fail(err)
	}
	// The control socket is up before the mount reports ready, so that
	// `vafs mount --background` and then `vafs snapshot` works. A mount
	// without it still serves files.
	ctl, err := control.Serve(f, filepath.Join(data, control.SocketName), lg)
	if err != nil {
		lg.Printf("%v: clone, snapshot, describe, df and compact cannot reach this mount", err)
	}
	fmt.Printf("vafs: mounted %s on %s (pid %d)\n", data, mnt, os.Getpid())
	if ready != nil {
		fmt.Fprintln(ready, "ok")
		ready.Close()
	}
	go func() {
		for s := range sigs {
			lg.Printf("%v: unmounting %s", s, mnt)
			unmountOnSignal(srv.Unmount, mnt, lg)
		}
	}()
	srv.Wait()
	if ctl != nil {
		// Waits for requests in progress: they need f open.
		if err := ctl.Close(); err != nil {
			lg.Printf("control socket: %v", err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("flush on unmount: %w", err)
	}
	lg.Printf("unmounted %s; everything is flushed", mnt)
	return nil
}

// unmountOnSignal unmounts; while the mount is busy it retries for a while
// and then detaches it (the kernel finishes the unmount once the last user
// goes, and Serve returns then).
func unmountOnSignal(unmount func() error, mnt string, lg *log.Logger) {
	for i := 0; i < 10; i++ {
		err := unmount()
		if err == nil {
			return
		}
		lg.Printf("unmount %s: %v; retrying", mnt, err)
		time.Sleep(time.Second)
	}
	lg.Printf("%s still busy: detaching it", mnt)
	if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
		lg.Printf("detach %s: %v", mnt, err)
	}
}

// checkMountpoint wants an existing directory that is not already a live
// FUSE mount. A dead FUSE mount left by a killed vafs ("transport endpoint
// is not connected") is detached first. stat alone cannot tell: the kernel
// may answer it from its attribute cache, so statfs, which always reaches
// the server, decides.
func checkMountpoint(mnt string) error {
	for i := 0; i < 8 && isFuseMount(mnt); i++ {
		var st syscall.Statfs_t
		err := syscall.Statfs(mnt, &st)
		if err == nil {
			return fmt.Errorf("%s is already mounted (see /proc/mounts); unmount it first", mnt)
		}
		if !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
			return fmt.Errorf("mountpoint %s: %w", mnt, err)
		}
		if uerr := syscall.Unmount(mnt, syscall.MNT_DETACH); uerr != nil {
			return fmt.Errorf("mountpoint %s is a dead mount and cannot be detached: %w", mnt, uerr)
		}
		fmt.Fprintf(os.Stderr, "vafs: detached a dead mount at %s\n", mnt)
	}
	st, err := os.Stat(mnt)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mountpoint %s does not exist", mnt)
	}
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", mnt, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("mountpoint %s is not a directory", mnt)
	}
	return nil
}

// isFuseMount reports whether /proc/mounts lists a FUSE file system at mnt.
func isFuseMount(mnt string) bool {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && vafscli.Unescape(f[1]) == mnt && strings.HasPrefix(f[2], "fuse") {
			return true
		}
	}
	return false
}

func readyPipe() *os.File {
	v := os.Getenv(readyEnv)
	if v == "" {
		return nil
	}
	os.Unsetenv(readyEnv)
	fd, err := strconv.Atoi(v)
	if err != nil {
		return nil
	}
	return os.NewFile(uintptr(fd), "ready")
}

// background starts `vafsd mount` again in the foreground, detached, with
// its log in DATA/vafs.log, and returns once it reports the mount ready.
func background(data, mnt string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var args []string
	for _, a := range os.Args[1:] {
		if a != "--background" && a != "-background" && a != "--background=true" {
			args = append(args, a)
		}
	}
	logPath := filepath.Join(data, "vafs.log")
	lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("data dir %s cannot be written: %w", data, err)
	}
	defer lf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, args...)
	cmd.Args[0] = os.Args[0] // vafs's, as runEngine keeps it: ps shows `vafs mount ...`
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.ExtraFiles = []*os.File{pw}
	cmd.Env = append(os.Environ(), readyEnv+"=3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	pw.Close()
	msg, _ := io.ReadAll(bufio.NewReader(pr))
	pr.Close()
	s := strings.TrimSpace(string(msg))
	if s == "ok" {
		fmt.Printf("vafs: mounted %s on %s (pid %d, log %s)\n", data, mnt, cmd.Process.Pid, logPath)
		cmd.Process.Release()
		return nil
	}
	cmd.Wait()
	if s == "" {
		s = "the mount process exited before the mount answered; see " + logPath
	}
	return errors.New(s)
}

// parseDirtyExpire reads --dirty-expire: "auto" (fs.Options' default, 0)
// or a duration of at least 100ms (the background commit looks that often
// at the shortest).
func parseDirtyExpire(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if strings.EqualFold(t, "auto") || t == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(t)
	if err != nil || d < 100*time.Millisecond {
		return 0, fmt.Errorf("--dirty-expire %q: want a duration of at least 100ms, like 30s or 2m, or auto", s)
	}
	return d, nil
}

// parseCacheSize reads --write-cache: "auto" (fs.Options' default, 0), "0"
// or "off" (no cache: -1), or a size in bytes with an optional binary
// suffix (K, M, G, T; "KiB" and "KB" mean the same).
func parseCacheSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	switch t {
	case "AUTO", "":
		return 0, nil
	case "0", "OFF":
		return -1, nil
	}
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if k := len(t); k > 0 {
		if i := strings.IndexByte("KMGT", t[k-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			t = t[:k-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("--write-cache %q: want a size like 512M or 2G, 0 to turn the cache off, or auto", s)
	}
	if n == 0 {
		return -1, nil
	}
	return n * mult, nil
}
