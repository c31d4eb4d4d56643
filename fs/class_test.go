package fs

import (
	"io"
	"log"
	"sync"
	"testing"

	"github.com/vafs/vafs/blocks"
)

// openClassTest opens an FS whose volumes in local are ClassLocal, every
// other one ClassReplicated.
func openClassTest(t *testing.T, dir string, store blocks.Store, local *sync.Map, cache int64) *FS {
	t.Helper()
	f, err := Open(Options{DataDir: dir, Store: store, Logger: log.New(io.Discard, "", 0), SegmentBlocks: 64, WriteCache: cache,
		volumeClass: func(ino uint64) blocks.Class {
			if _, ok := local.Load(ino); ok {
				return blocks.ClassLocal
			}
			return blocks.ClassReplicated
		}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// classOfBlock is the class of the segment that holds block blk of ino.
func classOfBlock(t *testing.T, f *FS, ino, blk uint64) blocks.Class {
	t.Helper()
	seg := segOf(t, f, ino, blk)
	c, err := f.log.SegmentClass(seg)
	if err != nil {
		t.Fatalf("class of segment %s: %v", seg, err)
	}
	return c
}

// Two volumes of two classes written at once, with and without the
// write-back cache: each class's blocks go to segments of that class, both
// open at the same time. Compaction moves a block into a segment of the
// class it was in, not the class of a volume that maps it or wrote it: a's
// blocks 0..3 are l's (copy_file_range), local, and stay local when their
// segment is compacted; a's own stay replicated; l's stay local after l
// itself moved to the replicated class. A crash after the compaction and
// a remount read every class back from the segment headers.
func TestCompactKeepsBlocksInTheirClass(t *testing.T) {
	for _, cache := range []int64{-1, 0} {
		dir, store := t.TempDir(), blocks.NewMemStore()
		local := &sync.Map{}
		f := openClassTest(t, dir, store, local, cache)
		m := files{}
		a, l := create(t, f, "a"), create(t, f, "l")
		local.Store(l, true)
		// Interleaved: a fills A1 (0..63) and A2, l fills L1 and L2, at once.
		for blk := uint64(0); blk < 128; blk += 16 {
			m.write(t, f, a, blk, 16, 1)
			m.write(t, f, l, blk, 16, 1)
		}
		if err := f.Commit(); err != nil {
			t.Fatal(err)
		}
		a1, l1 := segOf(t, f, a, 0), segOf(t, f, l, 0)
		if a1 == l1 || segOf(t, f, a, 63) != a1 || segOf(t, f, l, 63) != l1 {
			t.Fatalf("cache %d: segments %s %s: the classes share one, or the layout is not as planned", cache, a1, l1)
		}
		m.copyRange(t, f, l, a, 0, 4)
		// A1: 4 + 35 dead, 25 live; L1: 35 dead, 29 live (0..3 now shared).
		for blk := uint64(8); blk < 64; blk++ {
			if blk%8 < 5 {
				m.write(t, f, a, blk, 1, 2)
				m.write(t, f, l, blk, 1, 2)
			}
		}
		if err := f.Commit(); err != nil { // the cache's blocks go to the log now, l still local
			t.Fatal(err)
		}
		// l moves to the replicated class (as a tier change will): its new
		// writes go there, the blocks it has stay local, compacted or not.
		local.Delete(l)
		m.write(t, f, l, 127, 1, 3)
		if err := f.Commit(); err != nil {
			t.Fatal(err)
		}
		want := func(f *FS) {
			t.Helper()
			for blk := uint64(0); blk < 128; blk++ {
				wa := blocks.ClassReplicated
				if blk < 4 {
					wa = blocks.ClassLocal
				}
				if c := classOfBlock(t, f, a, blk); c != wa {
					t.Fatalf("cache %d: block %d of a is in a %s segment, want %s", cache, blk, c, wa)
				}
				wl := blocks.ClassLocal
				if blk == 127 {
					wl = blocks.ClassReplicated
				}
				if c := classOfBlock(t, f, l, blk); c != wl {
					t.Fatalf("cache %d: block %d of l is in a %s segment, want %s", cache, blk, c, wl)
				}
			}
		}
		want(f)
		st, err := f.Compact()
		if err != nil {
			t.Fatal(err)
		}
		if st.Segments != 2 || st.Moved != 54 {
			t.Fatalf("cache %d: compaction %+v, want A1 and L1 (54 blocks)", cache, st)
		}
		if stored(store, a1) || stored(store, l1) {
			t.Fatal("victims still stored")
		}
		want(f)
		m.verify(t, f)
		crash(f)
		f = openClassTest(t, dir, store, local, cache)
		want(f) // a new Log: every class read from a header
		m.verify(t, f)
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		checkAllClean(t, dir, store)
	}
}
