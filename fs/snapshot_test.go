package fs

import (
	"bytes"
	"errors"
	"testing"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/meta"
)

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

func mustWrite(t *testing.T, f *FS, ino uint64, p []byte, off int64) {
	t.Helper()
	if _, err := f.WriteAt(ino, p, off); err != nil {
		t.Fatal(err)
	}
}

func readSnap(t *testing.T, f *FS, id uint64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	k, err := f.ReadSnapshotAt(id, b, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b[:k]
}

func checkClean(t *testing.T, dir string, store blocks.Store) {
	t.Helper()
	rep, err := Check(Options{DataDir: dir, Store: store, SegmentBlocks: 64})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("check: %v", rep.Problems)
	}
}

// TestSnapshotCloneRollback goes through every operation once, checking
// both sides of each share, across a crash and a clean reopen, and ends
// with a clean check (no leaked or double-freed node or segment).
func TestSnapshotCloneRollback(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openTest(t, dir, store)
	a := create(t, f, "a.raw")
	mustWrite(t, f, a, fill(1, 600*BlockSize), 0) // more than one leaf
	s1, err := f.SnapshotCreate(a, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.SnapshotCreate(a, "s1"); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate snapshot: %v, want ErrExists", err)
	}
	mustWrite(t, f, a, fill(2, 10*BlockSize), 5*BlockSize)
	mustWrite(t, f, a, fill(3, BlockSize), 700*BlockSize) // grows
	want1 := fill(1, 600*BlockSize)
	if got := readSnap(t, f, s1.ID, 800*BlockSize); !bytes.Equal(got, want1) {
		t.Fatal("snapshot changed after writes to the head")
	}
	headWant := readAll(t, f, a, 701*BlockSize)
	if headWant[5*BlockSize] != 2 || headWant[700*BlockSize] != 3 || len(headWant) != 701*BlockSize {
		t.Fatal("head does not have its writes")
	}
	// Clone the file and the snapshot.
	c, err := f.CloneWithOrigin(a, meta.RootIno, "c.raw", "a.raw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Clone(a, meta.RootIno, "c.raw"); !errors.Is(err, ErrExists) {
		t.Fatalf("clone onto an existing name: %v", err)
	}
	cs, err := f.CloneSnapshot(s1.ID, meta.RootIno, "from-s1.raw")
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, f, c.Ino, fill(9, BlockSize), 0)
	mustWrite(t, f, cs.Ino, fill(8, BlockSize), BlockSize)
	if got := readAll(t, f, a, 701*BlockSize); !bytes.Equal(got, headWant) {
		t.Fatal("a write to a clone reached the source")
	}
	if got := readAll(t, f, cs.Ino, 800*BlockSize); got[0] != 1 || got[BlockSize] != 8 || len(got) != 600*BlockSize {
		t.Fatal("clone of the snapshot is wrong")
	}
	// Snapshot s2, rollback to s1, check sizes and content.
	if _, err := f.SnapshotCreate(a, "s2"); err != nil {
		t.Fatal(err)
	}
	f.Open(a, true)
	if err := f.SnapshotRollback(a, "s1", false); !errors.Is(err, ErrBusy) {
		t.Fatalf("rollback of a file open for writing: %v", err)
	}
	f.Release(a, true)
	if err := f.SnapshotRollback(a, "s1", false); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, f, a, 800*BlockSize); !bytes.Equal(got, want1) {
		t.Fatal("rollback did not restore s1")
	}
	d, _ := f.inode(c.Ino)
	if d.Origin != "a.raw" {
		t.Fatalf("origin %q", d.Origin)
	}
	// Crash (no close): everything above was durable on return, except
	// the plain writes to the clones, which were never fsynced... but the
	// clone/snapshot commits after them made them durable too.
	f.compactor.Stop()
	close(f.stop)
	<-f.done
	f.db.Close()
	f.lock.Close()
	f = openTest(t, dir, store)
	if got := readAll(t, f, a, 800*BlockSize); !bytes.Equal(got, want1) {
		t.Fatal("rollback lost in a crash")
	}
	snaps, _ := f.Snapshots(a)
	if len(snaps) != 2 || snaps[0].Name != "s1" || snaps[1].Name != "s2" {
		t.Fatalf("snapshots after crash: %+v", snaps)
	}
	if got := readSnap(t, f, snaps[1].ID, 800*BlockSize); !bytes.Equal(got, headWant) {
		t.Fatal("s2 wrong after crash")
	}
	if err := f.SnapshotDelete(a, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of a missing snapshot: %v", err)
	}
	if err := f.SnapshotDelete(a, "s1"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, f, cs.Ino, 800*BlockSize); got[0] != 1 || got[BlockSize] != 8 {
		t.Fatal("deleting s1 broke its clone")
	}
	// Deleting the file deletes its remaining snapshot.
	if err := f.Unlink(meta.RootIno, "a.raw"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.SnapshotByID(snaps[1].ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("snapshot of a deleted file: %v", err)
	}
	if got := readAll(t, f, c.Ino, 701*BlockSize); got[0] != 9 || got[5*BlockSize] != 2 || got[700*BlockSize] != 3 {
		t.Fatal("deleting the source broke its clone")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, dir, store)
}

// TestCloneDirectory clones a tree with a subdirectory, a symlink and an
// xattr, and checks that the copy is independent.
func TestCloneDirectory(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openTest(t, dir, store)
	d, err := f.Mkdir(meta.RootIno, "vm", 0o750, 7, 8)
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := f.Mkdir(d.Ino, "sub", 0o700, 0, 0)
	img, _ := f.Create(sub.Ino, "disk.raw", 0o600, 0, 7, 8)
	mustWrite(t, f, img.Ino, fill(5, 3*BlockSize+17), 0)
	if err := f.SetXattr(img.Ino, "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Symlink(d.Ino, "link", "sub/disk.raw", 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Clone(d.Ino, d.Ino, "inside"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("clone of a directory into itself: %v", err)
	}
	if _, err := f.Clone(d.Ino, meta.RootIno, ".snapshots"); !errors.Is(err, ErrPerm) {
		t.Fatalf("clone onto .snapshots: %v", err)
	}
	c, err := f.Clone(d.Ino, meta.RootIno, "vm2")
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != d.Mode || c.Uid != 7 || c.Nlink != 3 {
		t.Fatalf("cloned dir attrs %+v", c)
	}
	csub, err := f.Lookup(c.Ino, "sub")
	if err != nil {
		t.Fatal(err)
	}
	cimg, err := f.Lookup(csub.Ino, "disk.raw")
	if err != nil {
		t.Fatal(err)
	}
	if cimg.Ino == img.Ino || cimg.Size != 3*BlockSize+17 || cimg.Mode != img.Mode {
		t.Fatalf("cloned file attrs %+v", cimg)
	}
	if v, err := f.GetXattr(cimg.Ino, "user.k"); err != nil || string(v) != "v" {
		t.Fatalf("xattr %q %v", v, err)
	}
	l, err := f.Lookup(c.Ino, "link")
	if err != nil {
		t.Fatal(err)
	}
	if tgt, _ := f.Readlink(l.Ino); tgt != "sub/disk.raw" {
		t.Fatalf("symlink target %q", tgt)
	}
	mustWrite(t, f, cimg.Ino, fill(6, BlockSize), 0)
	if got := readAll(t, f, img.Ino, BlockSize); got[0] != 5 {
		t.Fatal("write to the cloned tree reached the source")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, dir, store)
}

// TestConcurrentAlignedWrites: whole-block writes share the volume lock;
// concurrent extending writes must never shrink the size, and every block
// must read back as its last writer left it.
func TestConcurrentAlignedWrites(t *testing.T) {
	f := openTest(t, t.TempDir(), blocks.NewMemStore())
	defer f.Close()
	ino := create(t, f, "a")
	const writers, per = 8, 64
	done := make(chan error, writers)
	for w := 0; w < writers; w++ {
		go func(w int) {
			for i := 0; i < per; i++ {
				blk := int64(i*writers + w)
				if _, err := f.WriteAt(ino, fill(byte(w+1), BlockSize), blk*BlockSize); err != nil {
					done <- err
					return
				}
				if i%16 == 0 { // a partial write in between takes the lock exclusively
					if _, err := f.WriteAt(ino, []byte{byte(w + 1)}, blk*BlockSize+100); err != nil {
						done <- err
						return
					}
				}
			}
			done <- nil
		}(w)
	}
	for w := 0; w < writers; w++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	got := readAll(t, f, ino, writers*per*BlockSize+1)
	if len(got) != writers*per*BlockSize {
		t.Fatalf("size %d, want %d", len(got), writers*per*BlockSize)
	}
	for b := 0; b < writers*per; b++ {
		if want := fill(byte(b%writers+1), BlockSize); !bytes.Equal(got[b*BlockSize:(b+1)*BlockSize], want) {
			t.Fatalf("block %d wrong", b)
		}
	}
}

// TestSnapshotLseek: a snapshot keeps its holes, so copies of it stay sparse.
func TestSnapshotLseek(t *testing.T) {
	f := openTest(t, t.TempDir(), blocks.NewMemStore())
	defer f.Close()
	ino := create(t, f, "a")
	mustWrite(t, f, ino, fill(1, BlockSize), 10*BlockSize)
	if err := f.Truncate(ino, 20*BlockSize); err != nil {
		t.Fatal(err)
	}
	s, err := f.SnapshotCreate(ino, "s")
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, f, ino, fill(2, BlockSize), 0) // the head's hole at 0 is gone, the snapshot's is not
	if off, err := f.SnapshotLseek(s.ID, 0, SeekData); err != nil || off != 10*BlockSize {
		t.Fatalf("SEEK_DATA in snapshot: %d %v", off, err)
	}
	if off, err := f.SnapshotLseek(s.ID, 10*BlockSize, SeekHole); err != nil || off != 11*BlockSize {
		t.Fatalf("SEEK_HOLE in snapshot: %d %v", off, err)
	}
	if _, err := f.SnapshotLseek(s.ID, 11*BlockSize, SeekData); !errors.Is(err, ErrNoData) {
		t.Fatalf("SEEK_DATA past the last data: %v", err)
	}
	if off, err := f.Lseek(ino, 0, SeekData); err != nil || off != 0 {
		t.Fatalf("SEEK_DATA in head: %d %v", off, err)
	}
}

// TestCopyRangeRefusesOverlap: like copy_file_range(2), overlapping ranges
// of one file are EINVAL, never a half-overwritten copy.
func TestCopyRangeRefusesOverlap(t *testing.T) {
	f := openTest(t, t.TempDir(), blocks.NewMemStore())
	defer f.Close()
	ino := create(t, f, "a")
	mustWrite(t, f, ino, fill(1, 4*BlockSize), 0)
	if _, err := f.CopyRange(ino, 0, ino, BlockSize, 2*BlockSize); !errors.Is(err, ErrInvalid) {
		t.Fatalf("overlapping copy: %v", err)
	}
	if n, err := f.CopyRange(ino, 0, ino, 4*BlockSize, 4*BlockSize); err != nil || n != 4*BlockSize {
		t.Fatalf("adjacent copy: %d %v", n, err)
	}
}
