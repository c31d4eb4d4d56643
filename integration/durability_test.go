package integration

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// TestFsyncSurvivesSIGKILL: everything acknowledged by fsync (file data, a sparse
// size, a punched hole, new directories, a rename) is there after the mount process
// is SIGKILLed and the data dir is mounted again. The remount goes onto the dead
// mount without `umount -l`: `vafs mount` must detach it itself.
func TestFsyncSurvivesSIGKILL(t *testing.T) {
	requireRoot(t)
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)

	// 1: 1 MiB aligned + unaligned pieces.
	a := m.Path("a.img")
	f, err := os.OpenFile(a, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, f, pattern(1*MiB, 1, 0), 0)
	writeAt(t, f, pattern(5000, 2, 1000), 1000)          // unaligned, overwrites
	writeAt(t, f, pattern(777, 3, 3*MiB+123), 3*MiB+123) // beyond a hole
	fsync(t, f)
	f.Close()
	fsyncDir(t, mnt)

	// 2: a sparse 1 TiB volume with data at both ends.
	big := m.Path("big.img")
	f, err = os.OpenFile(big, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 * TiB); err != nil {
		t.Fatalf("ftruncate 1TiB: %v", err)
	}
	writeAt(t, f, pattern(64*KiB, 4, 0), 0)
	writeAt(t, f, pattern(64*KiB, 5, TiB-64*KiB), TiB-64*KiB)
	fsync(t, f)
	f.Close()

	// 3: punch a hole in the middle of written data.
	p := m.Path("punched.img")
	f, err = os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, f, pattern(1*MiB, 6, 0), 0)
	fsync(t, f)
	const punchFlags = 0x02 | 0x01 // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
	if err := syscall.Fallocate(int(f.Fd()), punchFlags, 256*KiB, 256*KiB); err != nil {
		t.Fatalf("fallocate punch hole: %v", err)
	}
	fsync(t, f)
	f.Close()
	fsyncDir(t, mnt)

	// 4: directories and an atomic rename, the way image tools replace a file.
	if err := os.MkdirAll(m.Path("vms", "vm1"), 0o755); err != nil {
		t.Fatal(err)
	}
	fsyncDir(t, m.Path("vms"))
	fsyncDir(t, mnt)
	writeFileSync(t, m.Path("vms", "vm1", "disk.raw.tmp"), pattern(200*KiB, 7, 0))
	if err := os.Rename(m.Path("vms", "vm1", "disk.raw.tmp"), m.Path("vms", "vm1", "disk.raw")); err != nil {
		t.Fatal(err)
	}
	fsyncDir(t, m.Path("vms", "vm1"))

	m.Kill()
	// statfs always reaches the server (stat may be answered from the
	// kernel's attribute cache), so it shows the mount is dead.
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(mnt, &sfs); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("statfs of a killed mount: %v, want ENOTCONN", err)
	}

	m = startMount(t, data, mnt) // onto the dead mount
	defer m.Stop()

	want := make([]byte, 3*MiB+123+777)
	copy(want, pattern(1*MiB, 1, 0))
	copy(want[1000:], pattern(5000, 2, 1000))
	copy(want[3*MiB+123:], pattern(777, 3, 3*MiB+123))
	got, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	expectBytes(t, "a.img after SIGKILL", got, want)
	expectBytes(t, "a.img O_DIRECT read", readRange(t, a, 0, 1*MiB, true), want[:1*MiB])

	if _, size := statBlocks(t, big); size != 1*TiB {
		t.Errorf("big.img size %d after SIGKILL, want %d", size, int64(TiB))
	}
	expectBytes(t, "big.img head", readRange(t, big, 0, 64*KiB, false), pattern(64*KiB, 4, 0))
	expectBytes(t, "big.img tail", readRange(t, big, TiB-64*KiB, 64*KiB, false), pattern(64*KiB, 5, TiB-64*KiB))
	if !isZero(readRange(t, big, TiB/2, 1*MiB, false)) {
		t.Error("big.img: hole in the middle is not zeros")
	}
	if used, _ := statBlocks(t, big); used > 8*MiB {
		t.Errorf("big.img: 128 KiB written in a 1 TiB file uses %d bytes", used)
	}

	wantP := pattern(1*MiB, 6, 0)
	clear(wantP[256*KiB : 512*KiB])
	gotP, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	expectBytes(t, "punched.img after SIGKILL", gotP, wantP)
	ext := dataExtents(t, p)
	if len(ext) != 2 || ext[0] != [2]int64{0, 256 * KiB} || ext[1] != [2]int64{512 * KiB, 1 * MiB} {
		t.Errorf("punched.img SEEK_DATA/SEEK_HOLE extents: %s, want [0,262144) [524288,1048576)", fmtExtents(ext))
	}

	gotD, err := os.ReadFile(m.Path("vms", "vm1", "disk.raw"))
	if err != nil {
		t.Fatalf("renamed file after SIGKILL: %v", err)
	}
	expectBytes(t, "vms/vm1/disk.raw", gotD, pattern(200*KiB, 7, 0))
	if _, err := os.Stat(m.Path("vms", "vm1", "disk.raw.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("disk.raw.tmp after an fsynced rename: %v, want not exist", err)
	}
}

// TestCleanShutdownFlushes: data and metadata written without fsync survive a clean
// SIGTERM (and then SIGINT) shutdown and the remount.
func TestCleanShutdownFlushes(t *testing.T) {
	requireRoot(t)
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)

	write := func(name string, seed uint64, n int) {
		t.Helper()
		f, err := os.OpenFile(m.Path(name), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		writeAt(t, f, pattern(n, seed, 0), 0)
		writeAt(t, f, pattern(3333, seed+100, 100*KiB+17), 100*KiB+17)
		if err := f.Close(); err != nil { // no fsync
			t.Fatal(err)
		}
	}
	check := func(name string, seed uint64, n int) {
		t.Helper()
		want := pattern(n, seed, 0)
		if len(want) < 100*KiB+17+3333 {
			want = append(want, make([]byte, 100*KiB+17+3333-len(want))...)
		}
		copy(want[100*KiB+17:], pattern(3333, seed+100, 100*KiB+17))
		got, err := os.ReadFile(m.Path(name))
		if err != nil {
			t.Fatalf("%s after clean shutdown: %v", name, err)
		}
		expectBytes(t, name+" after clean shutdown", got, want)
	}

	write("one.img", 10, 2*MiB)
	if err := os.Mkdir(m.Path("dir"), 0o750); err != nil {
		t.Fatal(err)
	}
	write("dir/two.img", 11, 10*KiB)
	if err := os.Symlink("../one.img", m.Path("dir", "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m.Path("one.img"), 0o600); err != nil {
		t.Fatal(err)
	}
	m.Stop() // SIGTERM; asserts exit 0 and unmounted

	m = startMount(t, data, mnt)
	check("one.img", 10, 2*MiB)
	check("dir/two.img", 11, 10*KiB)
	if fi, err := os.Stat(m.Path("one.img")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("one.img mode after clean shutdown: %v %v, want 0600", fi.Mode(), err)
	}
	if fi, err := os.Stat(m.Path("dir")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
		t.Errorf("dir after clean shutdown: %v %v, want a 0750 directory", fi, err)
	}
	if l, err := os.Readlink(m.Path("dir", "link")); err != nil || l != "../one.img" {
		t.Errorf("symlink after clean shutdown: %q %v", l, err)
	}

	// A second round through SIGINT, overwriting and truncating.
	write("one.img", 20, 2*MiB)
	if err := os.Truncate(m.Path("dir", "two.img"), 4096); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.Path("dir", "two.img"), m.Path("three.img")); err != nil {
		t.Fatal(err)
	}
	m.Interrupt()

	m = startMount(t, data, mnt)
	check("one.img", 20, 2*MiB)
	got, err := os.ReadFile(m.Path("three.img"))
	if err != nil {
		t.Fatal(err)
	}
	expectBytes(t, "three.img (renamed, truncated)", got, pattern(10*KiB, 11, 0)[:4096])
	if _, err := os.Stat(m.Path("dir", "two.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir/two.img after rename: %v, want not exist", err)
	}
	m.Stop()
	checkFsck(t, data)
}

// TestDeadMountDetachedByMount: a mount killed by SIGKILL leaves a dead FUSE mount;
// `vafs mount` onto it works without manual cleanup, and only one vafs mount is on
// the mountpoint afterwards.
func TestDeadMountDetachedByMount(t *testing.T) {
	requireRoot(t)
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	writeFileSync(t, m.Path("x"), []byte("hello"))
	m.Kill()
	if !isMounted(mnt) {
		t.Fatalf("after SIGKILL %s is no longer mounted; cannot test dead-mount recovery", mnt)
	}
	m = startMount(t, data, mnt)
	got, err := os.ReadFile(m.Path("x"))
	if err != nil || string(got) != "hello" {
		t.Errorf("x after remount onto dead mount: %q %v", got, err)
	}
	n := 0
	for _, mp := range procMounts() {
		if mp == mnt {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%s appears %d times in /proc/mounts, want 1 (dead mount not detached)", mnt, n)
	}
	m.Stop()
	if isMounted(mnt) {
		t.Errorf("%s still mounted after clean stop", mnt)
	}
}

// TestTruncateZeros: shrinking a file to the middle of a block and growing it again
// exposes zeros, never the old bytes, before and after SIGKILL + remount.
func TestTruncateZeros(t *testing.T) {
	requireRoot(t)
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	p := m.Path("t.img")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, f, pattern(1*MiB, 40, 0), 0)
	fsync(t, f)
	for _, step := range []struct{ size int64 }{{10000}, {1 * MiB}, {300 * KiB}, {2 * MiB}} {
		if err := f.Truncate(step.size); err != nil {
			t.Fatalf("ftruncate %d: %v", step.size, err)
		}
	}
	fsync(t, f)
	f.Close()
	want := make([]byte, 2*MiB)
	copy(want, pattern(10000, 40, 0))
	check := func(when string) {
		t.Helper()
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		expectBytes(t, when, got, want)
		expectBytes(t, when+" (O_DIRECT)", readRange(t, p, 0, 2*MiB, true), want)
	}
	check("after shrink to 10000 and regrow")
	m.Kill()
	m = startMount(t, data, mnt)
	check("after SIGKILL and remount")
	m.Stop()
}

// TestMmapMsync: data written through a shared mapping and msync(MS_SYNC)ed
// survives SIGKILL of the mount.
func TestMmapMsync(t *testing.T) {
	requireRoot(t)
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	p := m.Path("mapped.img")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(4 * MiB); err != nil {
		t.Fatal(err)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, 4*MiB, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap MAP_SHARED on vafs: %v", err)
	}
	want := make([]byte, 4*MiB)
	copy(want[4096:], pattern(1*MiB, 60, 4096))
	copy(want[3*MiB+100:], pattern(5000, 61, 3*MiB+100))
	copy(mem[4096:], want[4096:4096+MiB])
	copy(mem[3*MiB+100:], want[3*MiB+100:3*MiB+5100])
	_, _, e := syscall.Syscall(syscall.SYS_MSYNC, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), syscall.MS_SYNC)
	if e != 0 {
		t.Fatalf("msync: %v", e)
	}
	syscall.Munmap(mem)
	f.Close()
	m.Kill()
	m = startMount(t, data, mnt)
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	expectBytes(t, "mmap-written file after msync, SIGKILL and remount", got, want)
	m.Stop()
}

// TestDirtyExpireCommitsUnsyncedWrites: writes that were never fsynced are
// committed by the background commit once the oldest is --dirty-expire old
// (as the kernel writes back a file's dirty pages after
// vm.dirty_expire_centisecs), so a SIGKILL after that keeps them. The file
// stays open and is never closed before the kill: nothing but the
// background commit can have made the overwrite durable.
func TestDirtyExpireCommitsUnsyncedWrites(t *testing.T) {
	requireRoot(t)
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt, "--dirty-expire", "1s")
	p := m.Path("vm.raw")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	// Written twice before the fsync: an fsync that finds nothing
	// coalesced turns the file's cache off for a while (fs/wcache.go judge),
	// and the overwrite would go to the log directly.
	writeAt(t, f, pattern(4*MiB, 9, 0), 0)
	writeAt(t, f, pattern(4*MiB, 1, 0), 0)
	fsync(t, f)
	writeAt(t, f, pattern(4*MiB, 2, 0), 0) // an overwrite, cached, never fsynced
	// The committer looks every second (the expiry, when shorter than its
	// 5 s); the first look at least 1 s after the overwrite commits it.
	time.Sleep(4 * time.Second)
	m.Kill()
	f.Close()
	m = startMount(t, data, mnt)
	defer m.Stop()
	expectBytes(t, "an overwrite never fsynced, 4 s later, after SIGKILL", readRange(t, p, 0, 4*MiB, false), pattern(4*MiB, 2, 0))
}
