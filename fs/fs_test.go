package fs

import (
	"bytes"
	"errors"
	"io"
	"log"
	"math/rand"
	"testing"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/meta"
)

func openTest(t *testing.T, dir string, store blocks.Store) *FS {
	t.Helper()
	f, err := Open(Options{DataDir: dir, Store: store, Logger: log.New(io.Discard, "", 0), SegmentBlocks: 64, WriteCache: -1})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func create(t *testing.T, f *FS, name string) uint64 {
	t.Helper()
	a, err := f.Create(meta.RootIno, name, 0o644, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return a.Ino
}

func readAll(t *testing.T, f *FS, ino uint64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	k, err := f.ReadAt(ino, b, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b[:k]
}

// TestVolumeModel writes, punches and truncates at random (unaligned)
// offsets and compares every read with a byte-slice model, across
// reopens of the same data dir.
func TestVolumeModel(t *testing.T) {
	seed := rand.Int63()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openTest(t, dir, store)
	ino := create(t, f, "disk.raw")
	var model []byte
	const space = 3 << 20
	for step := 0; step < 400; step++ {
		switch r := rng.Intn(100); {
		case r < 55:
			off := rng.Intn(space)
			n := rng.Intn(70000) + 1
			p := make([]byte, n)
			rng.Read(p)
			if _, err := f.WriteAt(ino, p, int64(off)); err != nil {
				t.Fatal(err)
			}
			if off+n > len(model) {
				model = append(model, make([]byte, off+n-len(model))...)
			}
			copy(model[off:], p)
		case r < 65:
			off, n := rng.Intn(space), rng.Intn(100000)+1
			if err := f.Fallocate(ino, FallocPunchHole|FallocKeepSize, uint64(off), uint64(n)); err != nil {
				t.Fatal(err)
			}
			if off < len(model) {
				clear(model[off:min(off+n, len(model))])
			}
		case r < 72:
			size := rng.Intn(space)
			if err := f.Truncate(ino, uint64(size)); err != nil {
				t.Fatal(err)
			}
			if size < len(model) {
				model = model[:size]
			} else {
				model = append(model, make([]byte, size-len(model))...)
			}
		case r < 80:
			if err := f.Fsync(ino); err != nil {
				t.Fatal(err)
			}
			if rng.Intn(2) == 0 {
				f.Close()
				f = openTest(t, dir, store)
			}
		default:
			got := readAll(t, f, ino, space+100000)
			if !bytes.Equal(got, model) {
				t.Fatalf("step %d: read %d bytes differs from model of %d", step, len(got), len(model))
			}
			a, _ := f.GetAttr(ino)
			if a.Size != uint64(len(model)) {
				t.Fatalf("size %d, model %d", a.Size, len(model))
			}
		}
	}
	if got := readAll(t, f, ino, space+100000); !bytes.Equal(got, model) {
		t.Fatal("final read differs from model")
	}
	// Deleting the file frees every segment it used.
	if err := f.Unlink(meta.RootIno, "disk.raw"); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	f = openTest(t, dir, store)
	defer f.Close()
	if ids, _ := store.List(); len(ids) != 0 {
		t.Fatalf("%d segments left after deleting the only file", len(ids))
	}
}

// TestUncommittedWritesVanishCleanly: without fsync, a "crash" (dropping
// the FS without Close) returns to the last commit and never mixes.
func TestCrashReturnsToLastCommit(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openTest(t, dir, store)
	ino := create(t, f, "a")
	one := bytes.Repeat([]byte{1}, 1<<20)
	two := bytes.Repeat([]byte{2}, 1<<20)
	f.WriteAt(ino, one, 0)
	if err := f.Fsync(ino); err != nil {
		t.Fatal(err)
	}
	f.WriteAt(ino, two, 0)
	f.WriteAt(ino, two, 1<<20)
	// Simulate SIGKILL: release the lock and Pebble without committing.
	f.compactor.Stop()
	close(f.stop)
	<-f.done
	f.db.Close()
	f.lock.Close()
	g := openTest(t, dir, store)
	defer g.Close()
	a, _ := g.GetAttr(ino)
	if a.Size != 1<<20 {
		t.Fatalf("size after crash %d, want %d", a.Size, 1<<20)
	}
	if got := readAll(t, g, ino, 2<<20); !bytes.Equal(got, one) {
		t.Fatal("data after crash is not the committed version")
	}
}

func TestCorruptBlockIsAnErrorNotData(t *testing.T) {
	store := blocks.NewMemStore()
	f := openTest(t, t.TempDir(), store)
	defer f.Close()
	ino := create(t, f, "a")
	f.WriteAt(ino, bytes.Repeat([]byte{7}, 3*BlockSize), 0)
	ms, _ := f.trees.Lookup(ino, 1, 1)
	store.Corrupt(blocks.SegmentID(ms[0].Seg), blocks.RecordOffset(ms[0].Idx)+blocks.RecordHeaderSize+5)
	before := CorruptReads()
	buf := make([]byte, 3*BlockSize)
	if _, err := f.ReadAt(ino, buf, 0); !errors.Is(err, blocks.ErrChecksum) {
		t.Fatalf("read over a corrupt block: %v", err)
	}
	if CorruptReads() != before+1 {
		t.Fatal("corruption not counted")
	}
	// The healthy block next to it still reads.
	if _, err := f.ReadAt(ino, buf[:BlockSize], 2*BlockSize); err != nil || buf[0] != 7 {
		t.Fatalf("healthy block: %v", err)
	}
}

func TestSeekDataHoleAndSparseSize(t *testing.T) {
	f := openTest(t, t.TempDir(), blocks.NewMemStore())
	defer f.Close()
	ino := create(t, f, "sparse")
	const tib = 1 << 40
	if err := f.Truncate(ino, 16*tib); err != nil {
		t.Fatal(err)
	}
	f.WriteAt(ino, []byte("x"), 5*tib+10)
	a, _ := f.GetAttr(ino)
	if a.Size != 16*tib || a.Blocks != BlockSize/512 {
		t.Fatalf("size %d blocks %d", a.Size, a.Blocks)
	}
	if off, err := f.Lseek(ino, 0, SeekData); err != nil || off != 5*tib {
		t.Fatalf("SEEK_DATA %d %v", off, err)
	}
	if off, err := f.Lseek(ino, 5*tib, SeekHole); err != nil || off != 5*tib+BlockSize {
		t.Fatalf("SEEK_HOLE %d %v", off, err)
	}
	if _, err := f.Lseek(ino, 5*tib+BlockSize, SeekData); !errors.Is(err, ErrNoData) {
		t.Fatalf("SEEK_DATA past last data: %v", err)
	}
	b := make([]byte, 4)
	f.ReadAt(ino, b, 5*tib+9)
	if !bytes.Equal(b, []byte{0, 'x', 0, 0}) {
		t.Fatalf("read %v", b)
	}
}

func TestCopyRangeSharesBlocks(t *testing.T) {
	store := blocks.NewMemStore()
	f := openTest(t, t.TempDir(), store)
	defer f.Close()
	src, dst := create(t, f, "src"), create(t, f, "dst")
	data := make([]byte, 1<<20+123)
	rand.Read(data)
	f.WriteAt(src, data, 0)
	f.Commit()
	_, free0, _ := store.Space()
	n, err := f.CopyRange(src, 0, dst, 0, uint64(len(data)))
	if err != nil || n != uint64(len(data)) {
		t.Fatalf("copy %d %v", n, err)
	}
	f.Commit()
	if _, free1, _ := store.Space(); free0-free1 > 2*blocks.RecordSize {
		t.Fatalf("copy used %d bytes; blocks should be shared", free0-free1)
	}
	if got := readAll(t, f, dst, 2<<20); !bytes.Equal(got, data) {
		t.Fatal("copy differs")
	}
	// Independent after the copy.
	f.WriteAt(dst, []byte("changed"), 0)
	if got := readAll(t, f, src, 2<<20); !bytes.Equal(got, data) {
		t.Fatal("writing the copy changed the source")
	}
}

func TestOrphanLivesUntilRelease(t *testing.T) {
	store := blocks.NewMemStore()
	dir := t.TempDir()
	f := openTest(t, dir, store)
	ino := create(t, f, "tmp")
	f.Open(ino, true)
	f.WriteAt(ino, bytes.Repeat([]byte{9}, 1<<20), 0)
	if err := f.Unlink(meta.RootIno, "tmp"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, f, ino, 1<<20); len(got) != 1<<20 || got[0] != 9 {
		t.Fatal("unlinked open file unreadable")
	}
	f.Release(ino, true)
	if _, err := f.GetAttr(ino); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after last release: %v", err)
	}
	f.Commit()
	f.Close()
	if ids, _ := store.List(); len(ids) != 0 {
		t.Fatalf("%d segments left", len(ids))
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	dir := t.TempDir()
	f := openTest(t, dir, blocks.NewMemStore())
	defer f.Close()
	_, err := Open(Options{DataDir: dir, Store: blocks.NewMemStore()})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v; want ErrLocked", err)
	}
}

func TestRenameRules(t *testing.T) {
	f := openTest(t, t.TempDir(), blocks.NewMemStore())
	defer f.Close()
	d, _ := f.Mkdir(meta.RootIno, "d", 0o755, 0, 0)
	sub, _ := f.Mkdir(d.Ino, "sub", 0o755, 0, 0)
	if err := f.Rename(meta.RootIno, "d", sub.Ino, "x", 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("dir into its own subdir: %v", err)
	}
	create(t, f, "a")
	create(t, f, "b")
	if err := f.Rename(meta.RootIno, "a", meta.RootIno, "b", RenameNoReplace); !errors.Is(err, ErrExists) {
		t.Fatalf("NOREPLACE over existing: %v", err)
	}
	a0, _ := f.Lookup(meta.RootIno, "a")
	b0, _ := f.Lookup(meta.RootIno, "b")
	if err := f.Rename(meta.RootIno, "a", meta.RootIno, "b", RenameExchange); err != nil {
		t.Fatal(err)
	}
	a1, _ := f.Lookup(meta.RootIno, "a")
	if a1.Ino != b0.Ino {
		t.Fatal("exchange did not swap")
	}
	if err := f.Rename(meta.RootIno, "b", meta.RootIno, "d", 0); !errors.Is(err, ErrIsDir) {
		t.Fatalf("file over dir: %v", err)
	}
	if err := f.Rename(meta.RootIno, "a", meta.RootIno, "b", 0); err != nil {
		t.Fatal(err)
	}
	// After the exchange "a" named b0 and "b" named a0: the rename
	// replaced a0 with b0.
	if _, err := f.GetAttr(a0.Ino); !errors.Is(err, ErrNotFound) {
		t.Fatalf("replaced file still there: %v", err)
	}
	if b, _ := f.Lookup(meta.RootIno, "b"); b.Ino != b0.Ino {
		t.Fatal("renamed file lost")
	}
}
