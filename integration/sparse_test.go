package integration

import (
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
// loop devices work, mount it, write files, unmount, and fsck again.
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
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Logf("no loop devices (%v); skipping the loop-mount part", err)
	} else if _, err := exec.LookPath("losetup"); err != nil {
		t.Logf("no losetup; skipping the loop-mount part")
	} else {
		ext4Loop(t, img)
		mustRun(t, 3*time.Minute, "e2fsck", "-fn", img)
	}

	m.Stop()
	m = startMount(t, data, mnt)
	mustRun(t, 3*time.Minute, "e2fsck", "-fn", img)
	m.Stop()
}

func ext4Loop(t *testing.T, img string) {
	out, err := runCmd(t, time.Minute, "losetup", "--find", "--show", img)
	if err != nil {
		t.Logf("losetup --find --show: %v (%s); skipping the loop-mount part", err, strings.TrimSpace(out))
		return
	}
	dev := strings.TrimSpace(out)
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
	if out, err := runCmd(t, time.Minute, "mount", "-t", "ext4", dev, dir); err != nil {
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

	want := map[string][32]byte{}
	for i, n := range []int{40 * MiB, 1 * MiB, 12345} {
		p := filepath.Join(dir, "f"+string(rune('a'+i)))
		if err := os.WriteFile(p, pattern(n, uint64(500+i), 0), 0o644); err != nil {
			t.Fatalf("write on ext4-in-vafs: %v", err)
		}
		want[filepath.Base(p)] = sha(t, p)
	}
	if err := os.MkdirAll(filepath.Join(dir, "a", "b", "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	unmount()
	detachLoop()
	mustRun(t, 3*time.Minute, "e2fsck", "-fn", img)

	// Mount again read-only and compare, so the data went through vafs.
	out, err = runCmd(t, time.Minute, "losetup", "--find", "--show", "--read-only", img)
	if err != nil {
		t.Fatalf("losetup --read-only: %v\n%s", err, out)
	}
	dev = strings.TrimSpace(out)
	detached = false
	if out, err := runCmd(t, time.Minute, "mount", "-t", "ext4", "-o", "ro", dev, dir); err != nil {
		t.Fatalf("mount -o ro %s: %v\n%s", dev, err, out)
	}
	unmounted = false
	for name, h := range want {
		if got := sha(t, filepath.Join(dir, name)); got != h {
			t.Errorf("ext4-in-vafs file %s changed after loop remount", name)
		}
	}
	unmount()
	detachLoop()
}
