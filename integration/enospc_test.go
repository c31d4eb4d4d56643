package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

const enospcTmpfsSize = 200 * MiB

// smallTmpfs mounts a tmpfs of the given size on a fresh temp dir; cleanup
// unmounts it (after the vafs mount on top of it, cleanups being LIFO).
func smallTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.FormatInt(size, 10)); err != nil {
		skipOrFail(t, "cannot mount a %d MiB tmpfs for the data dir: %v", size/MiB, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("umount tmpfs %s: %v; detaching", dir, err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// fillUntilENOSPC writes 1 MiB chunks of pattern(seed) to path, fsyncing every
// 4 MiB, until a write or fsync fails. It returns the fsynced length and the error.
func fillUntilENOSPC(t *testing.T, path string, seed uint64, limit int64) (int64, error) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatalf("create %s: %v", path, err)
	}
	defer f.Close()
	var synced, off int64
	for off < limit {
		if _, err := f.WriteAt(pattern(1*MiB, seed, off), off); err != nil {
			return synced, err
		}
		off += 1 * MiB
		if off%(4*MiB) == 0 {
			if err := f.Sync(); err != nil {
				return synced, err
			}
			synced = off
		}
	}
	return synced, nil
}

func checkPrefix(t *testing.T, path string, seed uint64, n int64) {
	t.Helper()
	for off := int64(0); off < n; off += 4 * MiB {
		l := min(4*MiB, n-off)
		expectBytes(t, path+" (fsynced before ENOSPC)", readRange(t, path, off, int(l), true), pattern(int(l), seed, off))
		if t.Failed() {
			return
		}
	}
}

// writeSynced writes n bytes and fsyncs; it returns the first error.
func writeSynced(path string, seed uint64, n int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(pattern(n, seed, 0), 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// TestENOSPC: on a full data disk a write fails with ENOSPC (not EIO), what was
// fsynced stays readable, and writing works again once space is freed: first
// outside vafs, then by deleting files inside the mount. statfs on the mount
// reports the data disk's size.
func TestENOSPC(t *testing.T) {
	requireRoot(t)
	tfs := smallTmpfs(t, enospcTmpfsSize)
	data := filepath.Join(tfs, "data")
	// A reserve outside vafs on the same disk, freed later to make room.
	reserve := filepath.Join(tfs, "reserve")
	if err := os.WriteFile(reserve, pattern(16*MiB, 1, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	m := startMount(t, data, mnt)

	var sfs syscall.Statfs_t
	if err := syscall.Statfs(mnt, &sfs); err != nil {
		t.Fatalf("statfs %s: %v", mnt, err)
	}
	// statfs reports vafs's own space: the size is what vafs stores plus
	// what it can still write, so not the 16 MiB file beside it nor the
	// metadata reserve (2%, at least 16 MiB); used is only what vafs
	// stores (an empty data dir: Pebble's files).
	total := int64(sfs.Blocks) * sfs.Bsize
	want := int64(enospcTmpfsSize) - 16*MiB - 16*MiB
	if total < want-enospcTmpfsSize/10 || total > want+enospcTmpfsSize/10 {
		t.Errorf("statfs on the mount: %d blocks of %d = %d bytes, want the data disk's %d less the file beside vafs and the reserve, %d (±%d)",
			sfs.Blocks, sfs.Bsize, total, int64(enospcTmpfsSize), want, enospcTmpfsSize/10)
	}
	if used := int64(sfs.Blocks-sfs.Bfree) * sfs.Bsize; used > 32*MiB {
		t.Errorf("statfs on an empty mount: %d MiB used, want only vafs's metadata (< 32 MiB)", used/MiB)
	}
	if used := sfs.Files - sfs.Ffree; used != 1 {
		t.Errorf("statfs on an empty mount: %d inodes used, want 1 (the root)", used)
	}
	if sfs.Bavail > sfs.Blocks || sfs.Bfree > sfs.Blocks {
		t.Errorf("statfs on the mount: bavail %d / bfree %d > blocks %d", sfs.Bavail, sfs.Bfree, sfs.Blocks)
	}

	keep := m.Path("keep.img")
	if err := writeSynced(keep, 2, 8*MiB); err != nil {
		t.Fatalf("writing keep.img: %v", err)
	}

	// Fill until the disk is full.
	filler := m.Path("filler.img")
	synced, err := fillUntilENOSPC(t, filler, 3, 2*enospcTmpfsSize)
	if err == nil {
		t.Fatalf("wrote %d bytes to a %d byte data disk without an error", 2*enospcTmpfsSize, int64(enospcTmpfsSize))
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the data disk: %v, want ENOSPC (after %d bytes fsynced)", err, synced)
	}
	t.Logf("ENOSPC after %d MiB fsynced: %v", synced/MiB, err)
	if synced < 64*MiB {
		t.Errorf("only %d MiB fit on a %d MiB data disk with %d MiB reserved outside", synced/MiB, enospcTmpfsSize/MiB, 16)
	}
	if err := syscall.Statfs(mnt, &sfs); err == nil && sfs.Bavail*uint64(sfs.Bsize) > enospcTmpfsSize/10 {
		t.Errorf("statfs after ENOSPC reports %d bytes available (more than 10%% of the disk)", sfs.Bavail*uint64(sfs.Bsize))
	}
	checkPrefix(t, keep, 2, 8*MiB)
	checkPrefix(t, filler, 3, synced)

	// Free space outside vafs: writes work again.
	if err := os.Remove(reserve); err != nil {
		t.Fatal(err)
	}
	if err := writeSynced(m.Path("after-reserve.img"), 4, 4*MiB); err != nil {
		t.Fatalf("write+fsync of 4 MiB after freeing 16 MiB on the data disk: %v", err)
	}
	checkPrefix(t, m.Path("after-reserve.img"), 4, 4*MiB)

	// Fill again, then free space by deleting files inside the mount.
	synced2, err := fillUntilENOSPC(t, m.Path("filler2.img"), 5, 2*enospcTmpfsSize)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the data disk again: %v, want ENOSPC", err)
	}
	checkPrefix(t, m.Path("filler2.img"), 5, synced2)
	for _, n := range []string{"filler.img", "filler2.img"} {
		if err := os.Remove(m.Path(n)); err != nil {
			t.Fatalf("rm %s on a full vafs: %v", n, err)
		}
	}
	fsyncDir(t, mnt)
	// Space comes back (possibly after background reclamation).
	var lastErr error
	deadline := time.Now().Add(30 * time.Second)
	attempts := 0
	for {
		attempts++
		lastErr = writeSynced(m.Path("after-delete.img"), 6, 32*MiB)
		if lastErr == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if lastErr != nil {
		t.Fatalf("write+fsync of 32 MiB 30s after deleting %d MiB of files inside the mount: %v", (synced+synced2)/MiB, lastErr)
	}
	if attempts > 1 {
		t.Logf("writes worked again after %d attempts", attempts)
	}
	checkPrefix(t, m.Path("after-delete.img"), 6, 32*MiB)
	checkPrefix(t, keep, 2, 8*MiB)

	// A clean stop flushes everything, and it is all there after a remount.
	m.Stop()
	m = startMount(t, data, mnt)
	checkPrefix(t, keep, 2, 8*MiB)
	checkPrefix(t, m.Path("after-reserve.img"), 4, 4*MiB)
	checkPrefix(t, m.Path("after-delete.img"), 6, 32*MiB)
	for _, n := range []string{"filler.img", "filler2.img"} {
		if _, err := os.Stat(m.Path(n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after delete and remount: %v, want not exist", n, err)
		}
	}
	m.Stop()
	checkFsck(t, data)
}

// duBytes is the space a directory tree occupies (st_blocks), like du.
func duBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			}
		}
		return nil
	})
	return total
}

// TestSpaceRandomWrites: a VM-like workload (random 4 KiB O_DIRECT writes with an
// fsync every 64) writing 64 MiB must fit on a 256 MiB data disk: the data dir may
// cost more than the data, but not four times as much.
func TestSpaceRandomWrites(t *testing.T) {
	requireTools(t, "fio")
	tfs := smallTmpfs(t, 256*MiB)
	data := filepath.Join(tfs, "data")
	mnt := t.TempDir()
	m := startMount(t, data, mnt)
	args := []string{
		"--name=vmlike", "--filename=" + m.Path("vm.raw"), "--rw=randwrite", "--bs=4k",
		"--size=64m", "--ioengine=psync", "--direct=1", "--fsync=64", "--randseed=7",
		"--verify_state_save=0", "--output-format=terse",
	}
	out, err := runCmd(t, 4*time.Minute, "fio", args...)
	report := func() string {
		return "data dir: " + strconv.FormatInt(duBytes(t, data)/MiB, 10) + " MiB in all, meta " +
			strconv.FormatInt(duBytes(t, filepath.Join(data, "meta"))/MiB, 10) + " MiB, segments " +
			strconv.FormatInt(duBytes(t, filepath.Join(data, "segments"))/MiB, 10) + " MiB"
	}
	if err != nil || fioErr.MatchString(out) {
		t.Fatalf("fio %v: %v\n%s\n%s", args, err, out, report())
	}
	t.Log("after 64 MiB of random 4k writes: " + report())
	m.Stop()
	t.Log("after a clean stop: " + report())
}
