package integration

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// sparseLayout is where TestCpSparse writes into a 1 GiB file: scattered,
// some 4 KiB-aligned, some not.
var sparseLayout = []struct {
	off int64
	n   int
}{
	{0, 1 * MiB},
	{37*MiB + 4096, 512 * KiB},
	{300*MiB + 123, 700 * KiB},
	{512 * MiB, 2 * MiB},
	{999*MiB + 4000, 100},
	{1*GiB - 256*KiB, 256 * KiB},
}

func writeSparse(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(1 * GiB); err != nil {
		t.Fatal(err)
	}
	for i, r := range sparseLayout {
		writeAt(t, f, pattern(r.n, uint64(100+i), r.off), r.off)
	}
	fsync(t, f)
}

func checkSparse(t *testing.T, path string) {
	t.Helper()
	used, size := statBlocks(t, path)
	if size != 1*GiB {
		t.Errorf("%s: size %d, want 1 GiB", path, size)
	}
	// ~4.5 MiB written; allow rounding to blocks and some metadata.
	if used > 8*MiB {
		t.Errorf("%s: a 1 GiB file with ~4.5 MiB written uses %d bytes (not sparse)", path, used)
	}
	for i, r := range sparseLayout {
		expectBytes(t, path+" data range", readRange(t, path, r.off, r.n, false), pattern(r.n, uint64(100+i), r.off))
	}
	if !isZero(readRange(t, path, 700*MiB, 4*MiB, false)) {
		t.Errorf("%s: hole at 700 MiB is not zeros", path)
	}
	// SEEK_DATA/SEEK_HOLE: every written byte is inside a data extent, and the
	// extents cover little more than what was written.
	ext := dataExtents(t, path)
	var total int64
	for _, e := range ext {
		total += e[1] - e[0]
	}
	for _, r := range sparseLayout {
		in := false
		for _, e := range ext {
			if r.off >= e[0] && r.off+int64(r.n) <= e[1] {
				in = true
			}
		}
		if !in {
			t.Errorf("%s: written range [%d,%d) not inside a SEEK_DATA extent: %s", path, r.off, r.off+int64(r.n), fmtExtents(ext))
		}
	}
	if total > 8*MiB {
		t.Errorf("%s: SEEK_DATA extents cover %d bytes for ~4.5 MiB written: %s", path, total, fmtExtents(ext))
	}
}

// TestCpSparse: cp --sparse=always into, within and out of vafs keeps a 1 GiB
// image sparse and byte-identical.
func TestCpSparse(t *testing.T) {
	requireTools(t, "cp", "cmp")
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)

	src := m.Path("src.raw")
	writeSparse(t, src)
	checkSparse(t, src)

	local := filepath.Join(t.TempDir(), "local.raw")
	writeSparse(t, local)

	for _, c := range []struct{ from, to string }{
		{src, m.Path("copy.raw")},        // vafs -> vafs
		{local, m.Path("fromlocal.raw")}, // local -> vafs
	} {
		mustRun(t, 3*time.Minute, "cp", "--sparse=always", c.from, c.to)
		mustRun(t, 3*time.Minute, "cmp", c.from, c.to)
		checkSparse(t, c.to)
	}
	out := filepath.Join(t.TempDir(), "out.raw") // vafs -> local
	mustRun(t, 3*time.Minute, "cp", "--sparse=always", src, out)
	mustRun(t, 3*time.Minute, "cmp", src, out)
	if used, _ := statBlocks(t, out); used > 16*MiB {
		t.Errorf("cp --sparse=always from vafs to local disk wrote %d bytes: holes not detected", used)
	}

	m.Stop()
	m = startMount(t, data, mnt)
	checkSparse(t, m.Path("copy.raw"))
	checkSparse(t, m.Path("fromlocal.raw"))
	m.Stop()
}

func sha(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// TestExt4Image: mkfs.ext4 on a 512 MiB image on vafs, e2fsck -fn clean; then, if
// loop devices work, mount it, write files, unmount, fsck, and after a vafs remount
// fsck again and compare the files through a read-only loop mount.
func TestExt4Image(t *testing.T) {
	requireTools(t, "mkfs.ext4", "e2fsck", "truncate")
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	img := m.Path("ext4.img")
	mustRun(t, time.Minute, "truncate", "-s", "512M", img)
	mustRun(t, 3*time.Minute, "mkfs.ext4", "-F", "-q", img)
	mustRun(t, 3*time.Minute, "e2fsck", "-fn", img)
	if used, _ := statBlocks(t, img); used > 128*MiB {
		t.Errorf("fresh ext4 on a 512 MiB image uses %d bytes on vafs", used)
	}

	// Optional: loop-mount the image.
	var want map[string][32]byte
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Logf("no loop devices (%v); skipping the loop-mount part", err)
	} else if _, err := exec.LookPath("losetup"); err != nil {
		t.Logf("no losetup; skipping the loop-mount part")
	} else {
		want = withLoopMount(t, img, false, func(dir string) map[string][32]byte {
			w := map[string][32]byte{}
			for i, n := range []int{40 * MiB, 1 * MiB, 12345} {
				p := filepath.Join(dir, "f"+string(rune('a'+i)))
				if err := os.WriteFile(p, pattern(n, uint64(500+i), 0), 0o644); err != nil {
					t.Fatalf("write on ext4-in-vafs: %v", err)
				}
				w[filepath.Base(p)] = sha(t, p)
			}
			if err := os.MkdirAll(filepath.Join(dir, "a", "b", "c"), 0o755); err != nil {
				t.Fatal(err)
			}
			return w
		})
		mustRun(t, 3*time.Minute, "e2fsck", "-fn", img)
	}

	m.Stop()
	m = startMount(t, data, mnt)
	mustRun(t, 3*time.Minute, "e2fsck", "-fn", img)
	if want != nil {
		withLoopMount(t, img, true, func(dir string) map[string][32]byte {
			for name, h := range want {
				if got := sha(t, filepath.Join(dir, name)); got != h {
					t.Errorf("ext4-in-vafs file %s differs after a vafs remount", name)
				}
			}
			return nil
		})
	}
	m.Stop()
}

// withLoopMount attaches img to a loop device, mounts it, runs fn, and unmounts
// and detaches (also on failure, through t.Cleanup).
func withLoopMount(t *testing.T, img string, ro bool, fn func(dir string) map[string][32]byte) map[string][32]byte {
	t.Helper()
	largs := []string{"--find", "--show"}
	margs := []string{"-t", "ext4"}
	if ro {
		largs = append(largs, "--read-only")
		margs = append(margs, "-o", "ro")
	}
	out, err := runCmd(t, time.Minute, "losetup", append(largs, img)...)
	if err != nil {
		t.Fatalf("losetup %v %s: %v\n%s", largs, img, err, out)
	}
	dev := strings.TrimSpace(out)
	t.Logf("ext4 image on %s (read-only=%v)", dev, ro)
	detached := false
	detachLoop := func() {
		if !detached {
			detached = true
			if out, err := runCmd(t, time.Minute, "losetup", "-d", dev); err != nil {
				t.Errorf("losetup -d %s: %v\n%s", dev, err, out)
			}
		}
	}
	t.Cleanup(detachLoop)
	dir := t.TempDir()
	if out, err := runCmd(t, time.Minute, "mount", append(margs, dev, dir)...); err != nil {
		t.Fatalf("mount %s (loop on %s): %v\n%s", dev, img, err, out)
	}
	unmounted := false
	unmount := func() {
		if !unmounted {
			unmounted = true
			if out, err := runCmd(t, 2*time.Minute, "umount", dir); err != nil {
				t.Errorf("umount %s: %v\n%s", dir, err, out)
				detach(t, dir)
			}
		}
	}
	t.Cleanup(unmount)
	res := fn(dir)
	unmount()
	detachLoop()
	return res
}

// TestCopyIsolation: cp --reflink=auto (FICLONE or copy_file_range, which vafs may
// answer by sharing blocks) gives an equal, sparse copy, and afterwards writes to
// either file never show through in the other, before and after a remount, and
// after the source is deleted.
func TestCopyIsolation(t *testing.T) {
	t.Run("cp-reflink-auto", func(t *testing.T) {
		requireTools(t, "cp", "cmp")
		testCopyIsolation(t, func(src, dst string) {
			mustRun(t, 3*time.Minute, "cp", "--reflink=auto", src, dst)
		})
	})
	t.Run("copy_file_range", func(t *testing.T) {
		requireTools(t, "cmp")
		if sysCopyFileRange < 0 {
			t.Skip("copy_file_range syscall number not known on this architecture")
		}
		testCopyIsolation(t, copyFileRange)
	})
}

// copyFileRange copies a whole file with copy_file_range(2) only, as qemu-img
// convert and Go's io.Copy do, failing if the kernel or vafs refuses it.
func copyFileRange(src, dst string) {
	panicIf := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	in, err := os.Open(src)
	panicIf(err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	panicIf(err)
	defer out.Close()
	fi, err := in.Stat()
	panicIf(err)
	var inOff, outOff int64
	for inOff < fi.Size() {
		n, _, e := syscall.Syscall6(uintptr(sysCopyFileRange), in.Fd(), uintptr(unsafe.Pointer(&inOff)),
			out.Fd(), uintptr(unsafe.Pointer(&outOff)), uintptr(min(fi.Size()-inOff, 1<<30)), 0)
		if e != 0 {
			panic(fmt.Errorf("copy_file_range %s -> %s at %d: %w", src, dst, inOff, e))
		}
		if n == 0 {
			panic(fmt.Errorf("copy_file_range %s -> %s: 0 bytes at %d of %d", src, dst, inOff, fi.Size()))
		}
	}
	panicIf(out.Sync())
}

func testCopyIsolation(t *testing.T, copyFile func(src, dst string)) {
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	src, dst := m.Path("base.raw"), m.Path("vm1.raw")
	writeSparse(t, src)
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("copy: %v", r)
			}
		}()
		start := time.Now()
		copyFile(src, dst)
		t.Logf("copied a 1 GiB sparse image in %v", time.Since(start).Round(time.Millisecond))
	}()
	mustRun(t, 3*time.Minute, "cmp", src, dst)
	checkSparse(t, dst)

	// Overwrite inside shared data in both, at different places.
	want := map[string][]struct {
		off  int64
		n    int
		seed uint64
	}{}
	for i, r := range sparseLayout {
		want[src] = append(want[src], struct {
			off  int64
			n    int
			seed uint64
		}{r.off, r.n, uint64(100 + i)})
		want[dst] = append(want[dst], want[src][i])
	}
	overwrite := func(path string, off int64, n int, seed uint64) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		writeAt(t, f, pattern(n, seed, off), off)
		fsync(t, f)
		f.Close()
		want[path] = append(want[path], struct {
			off  int64
			n    int
			seed uint64
		}{off, n, seed})
	}
	overwrite(src, 64*KiB, 128*KiB, 900)         // inside the first shared range
	overwrite(dst, 512*MiB+4096, 8*KiB+100, 901) // inside another, unaligned end
	overwrite(dst, 700*MiB, 4*KiB, 902)          // a hole in both
	check := func(when string) {
		t.Helper()
		for path, ws := range want {
			// Later writes win: build the expected bytes for each range in order.
			for i, w := range ws {
				exp := pattern(w.n, w.seed, w.off)
				for _, later := range ws[i+1:] {
					lo, hi := max(w.off, later.off), min(w.off+int64(w.n), later.off+int64(later.n))
					if lo < hi {
						copy(exp[lo-w.off:hi-w.off], pattern(int(hi-lo), later.seed, lo))
					}
				}
				expectBytes(t, when+": "+filepath.Base(path)+" range", readRange(t, path, w.off, w.n, true), exp)
			}
		}
		if _, ok := want[src]; ok && !isZero(readRange(t, src, 700*MiB, 4*KiB, true)) {
			t.Errorf("%s: a write into the copy's hole shows through in the source", when)
		}
	}
	check("after writes")
	m.Stop()
	m = startMount(t, data, mnt)
	check("after remount")
	if err := os.Remove(src); err != nil {
		t.Fatal(err)
	}
	delete(want, src)
	fsyncDir(t, mnt)
	m.Stop()
	m = startMount(t, data, mnt)
	check("after deleting the source and remounting")
	m.Stop()
	checkFsck(t, data)
}
