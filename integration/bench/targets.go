package main

// The four things we measure. Each target gets its own directory under the
// work directory, so all of them sit on the same disk and file system.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

type target struct {
	name   string
	dir    string   // this target's directory under the work dir
	file   string   // the file fio reads and writes; set by setup
	files  []string // file, then one more per job for rows of several jobs; set by setup and addFiles
	broken bool     // setup worked but prefill did not
	setup  func(ctx context.Context, td *teardown) error
	// addFile makes the target's next file for a row of several jobs:
	// another file beside file (plain, loopback, vafs: four VMs' images
	// in one directory or mount), or another qcow2 image exported by a
	// qemu-storage-daemon of its own (four VMs' qemu each open their own
	// image).
	addFile func(ctx context.Context, td *teardown, i int) (string, error)
}

// addFiles gives t n files in all (t.files[0] is t.file).
func (t *target) addFiles(ctx context.Context, td *teardown, n int) error {
	if len(t.files) == 0 {
		t.files = []string{t.file}
	}
	for i := len(t.files); i < n; i++ {
		f, err := t.addFile(ctx, td, i)
		if err != nil {
			return err
		}
		t.files = append(t.files, f)
	}
	return nil
}

// beside names the i-th extra file in the same directory as t.file.
func (t *target) beside(i int) string {
	return filepath.Join(filepath.Dir(t.file), fmt.Sprintf("bench-%d.raw", i))
}

// targetDocs says, for the report, what each column is and how it is built.
var targetDocs = map[string]string{
	"plain": "`plain`: a regular file on the host file system of the work directory, opened by fio itself. The ceiling.",
	"qsd": "`qsd`: a qcow2 image (`qemu-img create -f qcow2 img.qcow2 SIZE`, default cluster size 64 KiB) exported as a regular file by " +
		"qemu-storage-daemon's FUSE export, started in the foreground as\n" +
		"  `qemu-storage-daemon --blockdev driver=file,node-name=file0,filename=img.qcow2,cache.direct=off " +
		"--blockdev driver=qcow2,node-name=q0,file=file0 " +
		"--export type=fuse,id=e0,node-name=q0,mountpoint=export.raw,writable=on`\n" +
		"  (the mount point is an existing empty regular file; `cache.direct=off` means qsd's own I/O on img.qcow2 goes " +
		"through the host page cache, so its reads can be served from memory even though fio uses O_DIRECT).",
	"loopback": "`loopback`: `vafs debug loopback SRC MNT`, go-fuse v2's stock loopback (`fs.NewLoopbackRoot`) of a plain directory " +
		"with the FUSE transport settings vafs uses (DirectMount, MaxWrite and MaxReadAhead 1 MiB, MaxBackground 64, async direct I/O, " +
		"parallel direct writes, no allow_other; 1 s entry/attr timeouts) and kernel FUSE passthrough disabled, so every I/O makes " +
		"the FUSE round trip. The kernel forwards fio's O_DIRECT in the open flags, so the loopback opens its backing file O_DIRECT " +
		"as well. The cost of FUSE and go-fuse before vafs does anything.",
	"vafs": "`vafs`: a file created by fio in `vafs mount --background --data DATA MNT` (DATA under the work directory). " +
		"vafs holds written blocks in its write-back cache (memory, `--write-cache`, default 1/8 of RAM) until the next commit " +
		"(fsync, or the background commit once the oldest cached write is 30 s old, as the kernel's dirty page write-back; docs/write-cache.md), then appends them to its segment files with O_DIRECT; " +
		"it reads segment files through the host page cache. So what fio asks for as direct I/O is direct only as far as the vafs " +
		"process, as for qsd; plain and loopback go O_DIRECT down to the disk.",
}

func newTarget(name string, cfg *config) *target {
	t := &target{name: name, dir: filepath.Join(cfg.workDir, name)}
	switch name {
	case "plain":
		t.setup = func(ctx context.Context, td *teardown) error {
			t.file = filepath.Join(t.dir, "bench.raw")
			return os.MkdirAll(t.dir, 0o755)
		}
	case "qsd":
		t.setup = func(ctx context.Context, td *teardown) error { return setupQSD(ctx, cfg, t, td) }
		t.addFile = func(ctx context.Context, td *teardown, i int) (string, error) {
			return addQSD(ctx, cfg, t, td, i)
		}
	case "loopback":
		t.setup = func(ctx context.Context, td *teardown) error { return setupLoopback(ctx, cfg, t, td) }
	case "vafs":
		t.setup = func(ctx context.Context, td *teardown) error { return setupVafs(ctx, cfg, t, td) }
	}
	if t.addFile == nil {
		t.addFile = func(ctx context.Context, td *teardown, i int) (string, error) { return t.beside(i), nil }
	}
	return t
}

func setupQSD(ctx context.Context, cfg *config, t *target, td *teardown) error {
	if err := os.MkdirAll(t.dir, 0o755); err != nil {
		return err
	}
	img := filepath.Join(t.dir, "img.qcow2")
	if _, err := runCmd(ctx, time.Minute, "qemu-img", "create", "-q", "-f", "qcow2", img, strconv.FormatInt(cfg.size, 10)); err != nil {
		return err
	}
	export, err := exportQcow2(ctx, t.dir, img, "qsd", td)
	if err != nil {
		return err
	}
	t.file = export
	return nil
}

// addQSD makes the i-th extra file of the qsd target: an image of its own
// under dir/job-i, exported by a daemon of its own.
func addQSD(ctx context.Context, cfg *config, t *target, td *teardown, i int) (string, error) {
	dir := filepath.Join(t.dir, fmt.Sprintf("job-%d", i))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	img := filepath.Join(dir, "img.qcow2")
	if _, err := runCmd(ctx, time.Minute, "qemu-img", "create", "-q", "-f", "qcow2", img, strconv.FormatInt(cfg.size, 10)); err != nil {
		return "", err
	}
	return exportQcow2(ctx, dir, img, fmt.Sprintf("qsd (job %d)", i), td)
}

// exportQcow2 exports the qcow2 image img (with its backing chain, which
// qemu opens from the image header) as the regular file dir/export.raw with
// qemu-storage-daemon's FUSE export, and registers the daemon's stop on td.
func exportQcow2(ctx context.Context, dir, img, name string, td *teardown) (string, error) {
	export := filepath.Join(dir, "export.raw")
	logPath := filepath.Join(dir, "qsd.log")
	// The FUSE export mounts over an existing regular file.
	if err := os.WriteFile(export, nil, 0o644); err != nil {
		return "", err
	}
	// Foreground, not --daemonize: we own the process, and SIGTERM makes it
	// unmount the export before it exits.
	d, err := startDaemon("qemu-storage-daemon", logPath, "qemu-storage-daemon",
		"--blockdev", "driver=file,node-name=file0,filename="+img+",cache.direct=off",
		"--blockdev", "driver=qcow2,node-name=q0,file=file0",
		"--export", "type=fuse,id=e0,node-name=q0,mountpoint="+export+",writable=on",
	)
	if err != nil {
		return "", err
	}
	td.add(name, func() error {
		err := d.stop(15 * time.Second)
		if uerr := ensureUnmounted(export); uerr != nil {
			return uerr
		}
		return err
	})
	if err := waitMounted(ctx, export, d, 30*time.Second); err != nil {
		return "", fmt.Errorf("%w (log: %s)", err, readTail(logPath))
	}
	return export, nil
}

func setupLoopback(ctx context.Context, cfg *config, t *target, td *teardown) error {
	src, mnt := filepath.Join(t.dir, "src"), filepath.Join(t.dir, "mnt")
	for _, d := range []string{src, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	logPath := filepath.Join(t.dir, "loopback.log")
	d, err := startDaemon("vafs debug loopback", logPath, cfg.vafsBin, "debug", "loopback", src, mnt)
	if err != nil {
		return err
	}
	td.add("loopback", func() error {
		err := d.stop(15 * time.Second)
		if uerr := ensureUnmounted(mnt); uerr != nil {
			return uerr
		}
		return err
	})
	if err := waitMounted(ctx, mnt, d, 30*time.Second); err != nil {
		return fmt.Errorf("%w (log: %s)", err, readTail(logPath))
	}
	t.file = filepath.Join(mnt, "bench.raw")
	return nil
}

func setupVafs(ctx context.Context, cfg *config, t *target, td *teardown) error {
	m, err := mountVafs(ctx, cfg, t.dir, "vafs", td)
	if err != nil {
		return err
	}
	t.file = filepath.Join(m.mnt, "bench.raw")
	return nil
}

// vafsMount is a vafs mount this command started: dir/data mounted on dir/mnt.
type vafsMount struct {
	data, mnt string
	unmount   func() error // idempotent; also registered on the teardown
}

// mountVafs mounts a fresh vafs with its data dir and mount point under dir.
func mountVafs(ctx context.Context, cfg *config, dir, name string, td *teardown) (*vafsMount, error) {
	m := &vafsMount{data: filepath.Join(dir, "data"), mnt: filepath.Join(dir, "mnt")}
	for _, d := range []string{m.data, m.mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// Register the teardown before mounting: a mount that half worked
	// must still be undone.
	m.unmount = func() error {
		var first error
		if isMounted(m.mnt) {
			if _, err := runCmd(context.Background(), 2*time.Minute, cfg.vafsBin, "umount", m.mnt); err != nil {
				first = err
			}
		}
		if err := ensureUnmounted(m.mnt); err != nil && first == nil {
			first = err
		}
		if err := reapByArg(cfg.vafsBin, m.mnt, 10*time.Second); err != nil && first == nil {
			first = err
		}
		return first
	}
	td.add(name, m.unmount)
	if _, err := runCmd(ctx, time.Minute, cfg.vafsBin, "mount", "--background", "--data", m.data, m.mnt); err != nil {
		return nil, err
	}
	if err := waitMounted(ctx, m.mnt, nil, 30*time.Second); err != nil {
		return nil, err
	}
	return m, nil
}

func readTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return tail(string(b), 600)
}

// remount unmounts m (flushing it) and mounts its data dir again: the new
// mount starts with cold caches, as after a host restart.
func (m *vafsMount) remount(ctx context.Context, cfg *config, name string, td *teardown) (*vafsMount, error) {
	if err := m.unmount(); err != nil {
		return nil, err
	}
	return mountVafs(ctx, cfg, filepath.Dir(m.data), name, td)
}
