package fs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/vafs/vafs/blocks"
)

// openCached opens a data dir with a write-back cache of the given size,
// no background commit and no compaction: the tests decide when to flush.
func openCached(t *testing.T, dir string, store blocks.Store, size int64) *FS {
	t.Helper()
	return openCachedOn(t, &crashDisk{dir: dir, store: store}, size)
}

// openCachedOn is openCached on a crash disk (fs/powercut_test.go).
func openCachedOn(t *testing.T, d *crashDisk, size int64) *FS {
	t.Helper()
	return openCachedWith(t, d, Options{WriteCache: size})
}

// openCachedWith is openCachedOn with more options (o's WriteCache is the
// cache's size).
func openCachedWith(t *testing.T, d *crashDisk, o Options) *FS {
	t.Helper()
	o.Logger, o.SegmentBlocks, o.CommitInterval, o.CompactInterval = log.New(io.Discard, "", 0), 64, 1<<40, -1
	f, err := Open(d.options(o))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func block(v byte, n int) []byte { return bytes.Repeat([]byte{v}, n*BlockSize) }

// createSized creates a file and gives it its size at once, as qemu-img
// create does for a raw image: the writes after it are overwrites within
// the size, which the write-back cache holds. A write that extends a file
// is never cached (it goes to the log with the size it sets,
// docs/write-cache.md "Per-volume fsync").
func createSized(t *testing.T, f *FS, name string, size uint64) uint64 {
	t.Helper()
	ino := create(t, f, name)
	if err := f.Truncate(ino, size); err != nil {
		t.Fatal(err)
	}
	return ino
}

// TestWriteCacheCoalescesOverwrites: ten overwrites of the same 1 MiB cost
// the log one copy of it, and read back as the last one before and after
// the commit and a remount.
func TestWriteCacheCoalescesOverwrites(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openCached(t, dir, store, 64<<20)
	ino := createSized(t, f, "a", 1<<20)
	for i := range 10 {
		if _, err := f.WriteAt(ino, block(byte(i+1), 256), 0); err != nil {
			t.Fatal(err)
		}
	}
	if ids, _ := store.List(); len(ids) != 0 {
		t.Fatalf("%d segments before any flush: writes were not cached", len(ids))
	}
	if got := readAll(t, f, ino, 1<<20); !bytes.Equal(got, block(10, 256)) {
		t.Fatal("cached read is not the last write")
	}
	if err := f.Fsync(ino); err != nil {
		t.Fatal(err)
	}
	if f.wc.used.Load() != 0 || f.dirtyPages(ino) != 0 {
		t.Fatalf("after fsync the cache still holds %d pages", f.wc.used.Load())
	}
	// 256 records of 4 KiB + header in segments of 64 records: 4 segments.
	if ids, _ := store.List(); len(ids) != 4 {
		t.Fatalf("%d segments after the commit, want 4 (one copy of 1 MiB)", len(ids))
	}
	f.Close()
	g := openCached(t, dir, store, 64<<20)
	defer g.Close()
	if got := readAll(t, g, ino, 1<<20); !bytes.Equal(got, block(10, 256)) {
		t.Fatal("after a remount the data is not the last write")
	}
}

// TestWriteCacheCrashReturnsToLastCommit: what was cached and not
// committed is gone after a crash, whole; what each file's fsync committed
// is there. Crashes are process kills and power cuts (forCrashDisks).
// (That one file's fsync leaves another's cache alone is
// TestFsyncLeavesOtherVolumesCached.)
func TestWriteCacheCrashReturnsToLastCommit(t *testing.T) {
	forCrashDisks(t, func(t *testing.T, d *crashDisk) {
		f := openCachedOn(t, d, 64<<20)
		a, b := createSized(t, f, "a", 1<<20), createSized(t, f, "b", 16*BlockSize)
		f.WriteAt(a, block(9, 256), 0) // overwritten: a's fsync does not make it write through (judge)
		f.WriteAt(a, block(1, 256), 0)
		f.WriteAt(b, block(1, 16), 0)
		if f.dirtyPages(a) != 256 || f.dirtyPages(b) != 16 {
			t.Fatalf("%d and %d blocks cached, want 256 and 16", f.dirtyPages(a), f.dirtyPages(b))
		}
		for _, ino := range []uint64{a, b} { // an fsync commits its own file
			if err := f.Fsync(ino); err != nil {
				t.Fatal(err)
			}
		}
		f.WriteAt(a, block(2, 128), 0)
		f.WriteAt(b, block(2, 16), 0)
		if f.dirtyPages(a) != 128 || f.dirtyPages(b) != 16 {
			t.Fatalf("%d and %d blocks cached, want 128 and 16", f.dirtyPages(a), f.dirtyPages(b))
		}
		d.crash(f)
		g := openCachedOn(t, d, 64<<20)
		defer g.Close()
		if got := readAll(t, g, a, 1<<20); !bytes.Equal(got, block(1, 256)) {
			t.Fatal("a: not the committed data after the crash")
		}
		if got := readAll(t, g, b, 16*BlockSize); !bytes.Equal(got, block(1, 16)) {
			t.Fatal("b: not the committed data after the crash")
		}
	})
}

// TestFsyncLeavesOtherVolumesCached: an fsync writes out its own volume's
// cached blocks and no other's (docs/write-cache.md, "Per-volume fsync"):
// after A's fsync, B's cached blocks are still cached and not one record
// of B's has reached the store. After a crash (process kill, power cut) A
// holds everything its fsync acknowledged, and B is at its own last fsync
// or later block by block: each block holds its value at B's fsync or the
// value of a later write to it. Which one is decided by whether the later
// write had reached the log when a commit ran: here B's only-cached
// blocks are not kept (round 1), and blocks a SEEK_DATA flushed to the
// log before A's fsync committed the trees are (round 2), over the
// blocks B cached again afterwards. The fsync journal is off: with it,
// A's small fsync in round 2 would write a record and commit nothing of
// B's (the journal's own tests are TestFsyncJournal*).
func TestFsyncLeavesOtherVolumesCached(t *testing.T) {
	forCrashDisks(t, func(t *testing.T, d *crashDisk) {
		const n = 128 // blocks of each file
		f := openCachedWith(t, d, Options{WriteCache: 64 << 20, NoFsyncJournal: true})
		a, b := createSized(t, f, "a", n*BlockSize), createSized(t, f, "b", n*BlockSize)
		// B's last certain point: blocks 0-63 are 1s, 64-127 zeros.
		bFsynced := append(block(1, 64), block(0, 64)...)
		if _, err := f.WriteAt(b, bFsynced[:64*BlockSize], 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Fsync(b); err != nil {
			t.Fatal(err)
		}

		// Round 1: B's later writes are only cached when A fsyncs.
		bLater := [][]byte{bFsynced} // B's content after each write since its fsync
		writeB := func(f *FS, p []byte, blk int) {
			t.Helper()
			if _, err := f.WriteAt(b, p, int64(blk)*BlockSize); err != nil {
				t.Fatal(err)
			}
			next := bytes.Clone(bLater[len(bLater)-1])
			copy(next[blk*BlockSize:], p)
			bLater = append(bLater, next)
		}
		writeB(f, block(2, 32), 0)   // over B's fsynced data
		writeB(f, block(3, 16), 100) // over its zeros
		wantA := append(block(4, n), block(5, 8)...)
		if _, err := f.WriteAt(a, wantA[:n*BlockSize], 0); err != nil { // cached
			t.Fatal(err)
		}
		if _, err := f.WriteAt(a, wantA[n*BlockSize:], n*BlockSize); err != nil { // extends A: to the log at once
			t.Fatal(err)
		}
		if f.dirtyPages(a) != n || f.dirtyPages(b) != 48 {
			t.Fatalf("%d blocks of A and %d of B cached before A's fsync, want %d and 48", f.dirtyPages(a), f.dirtyPages(b), n)
		}
		before := storeRecords(t, d.Store())
		if err := f.Fsync(a); err != nil {
			t.Fatal(err)
		}
		after := storeRecords(t, d.Store())
		if f.dirtyPages(a) != 0 {
			t.Fatalf("A's fsync left %d of A's blocks cached", f.dirtyPages(a))
		}
		if f.dirtyPages(b) != 48 {
			t.Fatalf("A's fsync took B's cached blocks from 48 to %d: it wrote out another volume's cache", f.dirtyPages(b))
		}
		if after[b] != before[b] {
			t.Fatalf("A's fsync appended %d records of B to the store", after[b]-before[b])
		}
		if after[a]-before[a] < n {
			t.Fatalf("A's fsync appended %d records of A, want at least its %d cached blocks", after[a]-before[a], n)
		}
		if got := readAll(t, f, b, n*BlockSize); !bytes.Equal(got, bLater[len(bLater)-1]) {
			t.Fatal("B does not read its cached writes after A's fsync")
		}
		d.crash(f)
		f = openCachedWith(t, d, Options{WriteCache: 64 << 20, NoFsyncJournal: true})
		if got := readAll(t, f, a, 2*n*BlockSize); !bytes.Equal(got, wantA) {
			t.Fatalf("round 1: A after the crash is not what its fsync acknowledged: %s", mDiff(got, wantA, 0))
		}
		gotB := readAll(t, f, b, 2*n*BlockSize)
		checkBlockRule(t, "round 1: B after the crash", gotB, bLater)
		if !bytes.Equal(gotB, bFsynced) { // none of B's later writes reached the log
			t.Fatalf("round 1: B after the crash is not as of its fsync: %s", mDiff(gotB, bFsynced, 0))
		}

		// Round 2: a SEEK_DATA writes B's cache to the log (no commit);
		// A's fsync then commits B's tree as it is, and what B caches
		// after the flush stays behind.
		bLater = [][]byte{bFsynced} // the crash made the disk's state certain
		writeB(f, block(6, 16), 0)
		if _, err := f.Lseek(b, 0, SeekData); err != nil {
			t.Fatal(err)
		}
		flushed := bLater[len(bLater)-1]
		writeB(f, block(7, 8), 8)  // over flushed blocks
		writeB(f, block(8, 8), 64) // over zeros
		if _, err := f.WriteAt(a, block(9, 4), 0); err != nil {
			t.Fatal(err)
		}
		copy(wantA, block(9, 4))
		if f.dirtyPages(b) != 16 {
			t.Fatalf("round 2: %d blocks of B cached, want 16", f.dirtyPages(b))
		}
		if err := f.Fsync(a); err != nil {
			t.Fatal(err)
		}
		if f.dirtyPages(b) != 16 {
			t.Fatalf("round 2: A's fsync took B's cached blocks from 16 to %d", f.dirtyPages(b))
		}
		d.crash(f)
		g := openCachedWith(t, d, Options{WriteCache: 64 << 20, NoFsyncJournal: true})
		defer g.Close()
		if got := readAll(t, g, a, 2*n*BlockSize); !bytes.Equal(got, wantA) {
			t.Fatalf("round 2: A after the crash is not what its fsync acknowledged: %s", mDiff(got, wantA, 0))
		}
		gotB = readAll(t, g, b, 2*n*BlockSize)
		checkBlockRule(t, "round 2: B after the crash", gotB, bLater)
		if !bytes.Equal(gotB, flushed) { // the flushed blocks are kept, the ones cached after them not
			t.Fatalf("round 2: B after the crash is not as of the SEEK_DATA's flush: %s", mDiff(gotB, flushed, 0))
		}
	})
}

// checkBlockRule: got, a file after a crash, has the size of the last of
// states (the file's content at its last certain point, then after each
// later write; these writes do not change the size), and each of its
// blocks is that block in one of the states.
func checkBlockRule(t *testing.T, what string, got []byte, states [][]byte) {
	t.Helper()
	if len(got) != len(states[len(states)-1]) {
		t.Fatalf("%s: size %d, want %d", what, len(got), len(states[len(states)-1]))
	}
	for off := 0; off < len(got); off += BlockSize {
		end := min(off+BlockSize, len(got))
		ok := false
		for _, s := range states {
			ok = ok || bytes.Equal(got[off:end], s[off:end])
		}
		if !ok {
			t.Fatalf("%s: block %d holds %x..., none of its values since the file's last fsync", what, off/BlockSize, got[off:off+8])
		}
	}
}

// storeRecords counts the valid records in a store's segments, by the
// volume they belong to.
func storeRecords(t *testing.T, s blocks.Store) map[uint64]int {
	t.Helper()
	ids, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]int{}
	rec := make([]byte, blocks.RecordSize)
	for _, id := range ids {
		sf, err := s.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		size, err := sf.Size()
		if err != nil {
			t.Fatal(err)
		}
		for idx := uint32(0); blocks.RecordOffset(idx)+blocks.RecordSize <= size; idx++ {
			if _, err := sf.ReadAt(rec, blocks.RecordOffset(idx)); err != nil {
				t.Fatal(err)
			}
			if _, tag, err := blocks.DecodeRecord(rec, id, idx); err == nil { // not written (preallocated): skipped
				out[tag.Volume]++
			}
		}
	}
	return out
}

// TestWriteCachePunchTruncateDropCached: punching, zeroing and truncating
// ranges whose blocks are only cached make them read as zeros, before and
// after the commit; unaligned edges keep their other bytes.
func TestWriteCachePunchTruncateDropCached(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openCached(t, dir, store, 64<<20)
	ino := create(t, f, "a")
	want := block(7, 64)
	f.WriteAt(ino, want, 0)
	if err := f.Fallocate(ino, FallocPunchHole|FallocKeepSize, 10*BlockSize+100, 5*BlockSize); err != nil {
		t.Fatal(err)
	}
	clear(want[10*BlockSize+100 : 15*BlockSize+100])
	if err := f.Fallocate(ino, FallocZeroRange, 30*BlockSize, 2*BlockSize); err != nil {
		t.Fatal(err)
	}
	clear(want[30*BlockSize : 32*BlockSize])
	if err := f.Truncate(ino, 40*BlockSize+5); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(ino, 64*BlockSize); err != nil {
		t.Fatal(err)
	}
	clear(want[40*BlockSize+5:])
	check := func(f *FS, when string) {
		t.Helper()
		if got := readAll(t, f, ino, len(want)); !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && got[i] == want[i] {
				i++
			}
			t.Fatalf("%s: first difference at byte %d", when, i)
		}
	}
	check(f, "cached")
	if err := f.Fsync(ino); err != nil {
		t.Fatal(err)
	}
	check(f, "committed")
	f.Close()
	g := openCached(t, dir, store, 64<<20)
	defer g.Close()
	check(g, "remounted")
}

// TestTruncateTailZeroAfterOtherFsyncCrash: a truncate that shrinks a file
// to the middle of a block zeroes that block's tail, and the new size goes
// to the tree at once; another file's fsync commits the trees as they are.
// After a crash, growing the file again must read zeros past the old end
// (POSIX, and the model test). When the zeroed block was only cached, the
// commit held the new size with the block as it was before the truncate,
// old bytes past the new end included, and growing the file after the
// crash made them readable (found by the model test with per-volume fsync).
func TestTruncateTailZeroAfterOtherFsyncCrash(t *testing.T) {
	forCrashDisks(t, func(t *testing.T, d *crashDisk) {
		f := openCachedOn(t, d, 64<<20)
		a, b := create(t, f, "a"), create(t, f, "b")
		if _, err := f.WriteAt(a, block(7, 2), 0); err != nil { // extends a: in the tree at once
			t.Fatal(err)
		}
		if err := f.Truncate(a, BlockSize+100); err != nil { // block 1's tail zeroed, in the cache
			t.Fatal(err)
		}
		// b's fsync commits the trees: a's new size, block 1 unchanged
		// (b's extending write makes it commit, not write a journal
		// record, which would commit nothing of a's).
		if _, err := f.WriteAt(b, block(1, 1), 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Fsync(b); err != nil {
			t.Fatal(err)
		}
		d.crash(f)
		g := openCachedOn(t, d, 64<<20)
		defer g.Close()
		if err := g.Truncate(a, 2*BlockSize); err != nil {
			t.Fatal(err)
		}
		want := append(block(7, 1), block(0, 1)...)
		copy(want[BlockSize:], bytes.Repeat([]byte{7}, 100))
		if got := readAll(t, g, a, 2*BlockSize); !bytes.Equal(got, want) {
			t.Fatalf("after the crash and a truncate up: %s", mDiff(got, want, 0))
		}
	})
}

// TestWriteCacheSeekAndShare: SEEK_DATA and copy_file_range see blocks that
// are only cached.
func TestWriteCacheSeekAndShare(t *testing.T) {
	f := openCached(t, t.TempDir(), blocks.NewMemStore(), 64<<20)
	defer f.Close()
	a, b := createSized(t, f, "a", 1<<20), createSized(t, f, "b", 8*BlockSize)
	f.WriteAt(a, block(3, 4), 100*BlockSize)
	if off, err := f.Lseek(a, 0, SeekData); err != nil || off != 100*BlockSize {
		t.Fatalf("SEEK_DATA over cached blocks: %d, %v", off, err)
	}
	f.WriteAt(a, block(4, 4), 200*BlockSize)
	f.WriteAt(b, block(9, 8), 0)
	if f.dirtyPages(a) != 4 || f.dirtyPages(b) != 8 {
		t.Fatalf("%d blocks of a and %d of b cached, want 4 and 8", f.dirtyPages(a), f.dirtyPages(b))
	}
	if n, err := f.CopyRange(a, 200*BlockSize, b, 0, 4*BlockSize); err != nil || n != 4*BlockSize {
		t.Fatalf("copy range: %d, %v", n, err)
	}
	want := append(block(4, 4), block(9, 4)...)
	if got := readAll(t, f, b, 8*BlockSize); !bytes.Equal(got, want) {
		t.Fatal("copy_file_range of cached blocks did not copy them, or lost the target's own")
	}
}

// TestWriteCacheSnapshotAndRollback: a snapshot holds what was cached
// when it was taken; a rollback is not overlaid by cached blocks.
func TestWriteCacheSnapshotAndRollback(t *testing.T) {
	f := openCached(t, t.TempDir(), blocks.NewMemStore(), 64<<20)
	defer f.Close()
	ino := createSized(t, f, "a", 8*BlockSize)
	f.WriteAt(ino, block(1, 8), 0)
	if f.dirtyPages(ino) != 8 {
		t.Fatalf("%d blocks cached, want 8", f.dirtyPages(ino))
	}
	s, err := f.SnapshotCreate(ino, "s1")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(ino, block(2, 8), 0)
	buf := make([]byte, 8*BlockSize)
	if _, err := f.ReadSnapshotAt(s.ID, buf, 0); err != nil || !bytes.Equal(buf, block(1, 8)) {
		t.Fatalf("snapshot does not hold the cached data: %v", err)
	}
	if err := f.SnapshotRollback(ino, "s1", false); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, f, ino, 8*BlockSize); !bytes.Equal(got, block(1, 8)) {
		t.Fatal("after rollback the file reads cached data written after the snapshot")
	}
}

// TestWriteCacheFullAndDelete: a cache of one slab takes writes many times
// its size (the writer flushes when it is full), never holds more than its
// size and slack, and reads back right; deleting a file drops its blocks.
func TestWriteCacheFullAndDelete(t *testing.T) {
	f := openCached(t, t.TempDir(), blocks.NewMemStore(), cacheSlabBytes)
	defer f.Close()
	want := make([]byte, 16<<20)
	ino := createSized(t, f, "a", uint64(len(want)))
	cached := false
	rng := rand.New(rand.NewPCG(1, 2))
	for off := 0; off < len(want); off += 256 << 10 {
		p := want[off : off+256<<10]
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(ino, p, int64(off)); err != nil {
			t.Fatal(err)
		}
		if u := f.wc.used.Load(); u > f.wc.limit+cacheSlack {
			t.Fatalf("cache holds %d pages, size %d", u, f.wc.limit)
		}
		cached = cached || f.dirtyPages(ino) > 0
	}
	if !cached {
		t.Fatal("no write was cached: the test exercised no full cache")
	}
	if got := readAll(t, f, ino, len(want)); !bytes.Equal(got, want) {
		t.Fatal("data written through a full cache reads back wrong")
	}
	f.WriteAt(ino, block(5, 4), 0)
	if f.dirtyPages(ino) == 0 {
		t.Fatal("the last write was not cached")
	}
	if err := f.Unlink(1, "a"); err != nil {
		t.Fatal(err)
	}
	if f.wc.used.Load() != 0 {
		t.Fatalf("the deleted file's %d cached pages are still held", f.wc.used.Load())
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestWriteCacheLowSpaceWritesThrough: near a full disk writes are not
// cached, so ENOSPC comes from the write itself, and what was written
// before stays readable.
func TestWriteCacheLowSpaceWritesThrough(t *testing.T) {
	store := blocks.NewMemStore()
	store.Capacity = 300 << 20
	f := openCached(t, t.TempDir(), store, 64<<20)
	defer f.Close()
	ino := createSized(t, f, "a", 1<<30) // overwrites, which are cached unless space is low
	p := block(6, 256)
	var off int64
	var err error
	for off = 0; off < 1<<30; off += int64(len(p)) {
		if _, err = f.WriteAt(ino, p, off); err != nil {
			break
		}
		if f.dirtyPages(ino) != 0 {
			t.Fatal("a write was cached with less free space than the margin")
		}
	}
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("filling the disk: %v, want ErrNoSpace", err)
	}
	if got := readAll(t, f, ino, int(off)); !bytes.Equal(got, bytes.Repeat(p, int(off)/len(p))) {
		t.Fatal("data written before ENOSPC does not read back")
	}
}

// TestWriteCacheConcurrent: writers overwrite their own blocks with rising
// versions while readers, flushes and commits run beside them; a reader
// must never see a block go back to an older version (which a read that
// missed the cache and found the tree not yet updated would), and at the
// end every block holds its last version, also after a remount.
func TestWriteCacheConcurrent(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openCached(t, dir, store, 8<<20)
	ino := create(t, f, "a")
	const writers, per, rounds = 4, 64, 60
	ver := func(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }
	put := func(blk uint64, v uint64) []byte {
		p := make([]byte, BlockSize)
		binary.LittleEndian.PutUint64(p, v)
		binary.LittleEndian.PutUint64(p[BlockSize-8:], v)
		return p
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 16)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 1; r <= rounds; r++ {
				for i := range per {
					blk := uint64(w*per + i)
					if _, err := f.WriteAt(ino, put(blk, uint64(r)), int64(blk)*BlockSize); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	var rg sync.WaitGroup
	for range 2 {
		rg.Add(1)
		go func() {
			defer rg.Done()
			last := make([]uint64, writers*per)
			buf := make([]byte, writers*per*BlockSize)
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, err := f.ReadAt(ino, buf, 0)
				if err != nil {
					errs <- err
					return
				}
				for b := 0; b < n/BlockSize; b++ {
					p := buf[b*BlockSize : (b+1)*BlockSize]
					v := ver(p)
					if v != binary.LittleEndian.Uint64(p[BlockSize-8:]) {
						errs <- errors.New("torn block")
						return
					}
					if v < last[b] {
						errs <- errors.New("a block went back to an older version")
						return
					}
					last[b] = v
				}
			}
		}()
	}
	rg.Add(1)
	go func() {
		defer rg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := f.flushVolume(ino); err != nil {
				errs <- err
				return
			}
			if err := f.Commit(); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	rg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	check := func(f *FS) {
		t.Helper()
		buf := readAll(t, f, ino, writers*per*BlockSize)
		for b := 0; b < writers*per; b++ {
			if v := ver(buf[b*BlockSize:]); v != rounds {
				t.Fatalf("block %d holds version %d, want %d", b, v, rounds)
			}
		}
	}
	check(f)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g := openCached(t, dir, store, 8<<20)
	defer g.Close()
	check(g)
}

// TestWriteCacheThroughAfterUselessFsync: a volume whose fsync finds
// nothing coalesced (all new data) writes through for a while; one whose
// blocks were overwritten before the fsync stays cached. Both read right.
func TestWriteCacheThroughAfterUselessFsync(t *testing.T) {
	f := openCached(t, t.TempDir(), blocks.NewMemStore(), 64<<20)
	defer f.Close()
	stream, hot := createSized(t, f, "stream", 768*BlockSize), createSized(t, f, "hot", 512*BlockSize)
	f.WriteAt(stream, block(1, 512), 0)
	for i := range 4 {
		f.WriteAt(hot, block(byte(i+1), 512), 0)
	}
	if err := f.Fsync(stream); err != nil {
		t.Fatal(err)
	}
	if err := f.Fsync(hot); err != nil {
		t.Fatal(err)
	}
	f.WriteAt(stream, block(2, 256), 512*BlockSize)
	f.WriteAt(hot, block(9, 256), 0)
	if f.dirtyPages(stream) != 0 {
		t.Fatal("a volume whose fsync found nothing coalesced still caches its writes")
	}
	if f.dirtyPages(hot) == 0 {
		t.Fatal("a volume whose overwrites were coalesced stopped caching")
	}
	if got := readAll(t, f, stream, 768*BlockSize); !bytes.Equal(got, append(block(1, 512), block(2, 256)...)) {
		t.Fatal("stream reads back wrong")
	}
	if got := readAll(t, f, hot, 512*BlockSize); !bytes.Equal(got, append(block(9, 256), block(4, 256)...)) {
		t.Fatal("hot reads back wrong")
	}
}

// TestWriteCacheGenerationWindow: a commit freezes what is cached and
// flushes it while writes go on into the cache. Those writes read back at
// once but are not in that commit: after a crash the data dir is as of
// the freeze. A change to a tree in the window (here a write that extends
// a file) folds it: the commit then holds every write made before that
// change, cached or not.
func TestWriteCacheGenerationWindow(t *testing.T) {
	for _, fold := range []bool{false, true} {
		t.Run(fmt.Sprintf("fold=%v", fold), func(t *testing.T) {
			forCrashDisks(t, func(t *testing.T, d *crashDisk) {
				f := openCachedOn(t, d, 64<<20)
				a, b := create(t, f, "a"), create(t, f, "b")
				f.WriteAt(a, block(1, 64), 0)
				f.WriteAt(b, block(1, 64), 0)
				if err := f.Commit(); err != nil {
					t.Fatal(err)
				}
				f.WriteAt(a, block(2, 64), 0) // cached: the next commit's generation
				f.WriteAt(b, block(2, 64), 0)
				hooked := false
				f.wc.frozenHook = func() {
					if hooked {
						return
					}
					hooked = true
					if !f.wc.gen.Load() || f.wc.committing.Load() {
						t.Errorf("window: gen %v committing %v, want generation mode", f.wc.gen.Load(), f.wc.committing.Load())
					}
					if _, err := f.WriteAt(a, block(3, 32), 0); err != nil { // within the size: cached
						t.Error(err)
					}
					if f.wc.committing.Load() {
						t.Error("a cached write within the size folded the window")
					}
					if got := readAll(t, f, a, 64*BlockSize); !bytes.Equal(got, append(block(3, 32), block(2, 32)...)) {
						t.Error("in the window, a read is not the newest write")
					}
					if fold {
						if _, err := f.WriteAt(b, block(4, 16), 64*BlockSize); err != nil { // extends b
							t.Error(err)
						}
						if !f.wc.committing.Load() {
							t.Error("a write extending a file did not fold the window")
						}
					}
				}
				if err := f.Commit(); err != nil {
					t.Fatal(err)
				}
				if !hooked {
					t.Fatal("the commit did not open a generation window")
				}
				if f.wc.gen.Load() || f.wc.committing.Load() {
					t.Fatal("the window is still open after the commit")
				}
				if fold != (f.wc.used.Load() == 0) {
					t.Fatalf("fold %v: %d pages still cached after the commit", fold, f.wc.used.Load())
				}
				wantA := append(block(3, 32), block(2, 32)...)
				if got := readAll(t, f, a, 64*BlockSize); !bytes.Equal(got, wantA) {
					t.Fatalf("fold %v: after the commit a does not read its newest writes", fold)
				}
				d.crash(f)
				g := openCachedOn(t, d, 64<<20)
				gotA, gotB := readAll(t, g, a, 1<<20), readAll(t, g, b, 1<<20)
				if fold {
					if !bytes.Equal(gotA, wantA) || !bytes.Equal(gotB, append(block(2, 64), block(4, 16)...)) {
						t.Fatal("folded window: the commit does not hold every write made before the fold")
					}
				} else if !bytes.Equal(gotA, block(2, 64)) || !bytes.Equal(gotB, block(2, 64)) {
					t.Fatal("generation window: after a crash the data is not as of the freeze")
				}
				g.Close()
				d.checkClean(t)
			})
		})
	}
}

// TestWriteCacheFlushVolumeAcrossFreeze: a commit's freeze moves a
// volume's cached blocks from dirty to frozen while flushVolume runs (here
// between its two passes); flushVolume must still leave every block
// cached before it began in the tree, or SEEK_DATA and copy_file_range,
// which work on the tree, miss it.
func TestWriteCacheFlushVolumeAcrossFreeze(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openCached(t, dir, store, 64<<20)
	defer f.Close()
	a, b := createSized(t, f, "a", 1<<20), createSized(t, f, "b", BlockSize) // 1 MiB of hole; b is written over
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(a, block(7, 1), 100*BlockSize); err != nil { // cached
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, block(8, 1), 0); err != nil { // so that the commit freezes something
		t.Fatal(err)
	}
	frozen, release, committed := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	f.wc.frozenHook = func() {
		close(frozen)
		<-release
	}
	f.wc.passHook = func() {
		f.wc.passHook = nil
		go func() { committed <- f.Commit() }()
		<-frozen // the freeze happened between the passes
	}
	if f.dirtyPages(a) != 1 || f.dirtyPages(b) != 1 {
		t.Fatalf("%d blocks of a and %d of b cached, want 1 and 1", f.dirtyPages(a), f.dirtyPages(b))
	}
	off, err := f.Lseek(a, 0, SeekData)
	close(release)
	if cerr := <-committed; cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil || off != 100*BlockSize {
		t.Fatalf("SEEK_DATA from 0: %d, %v; want %d (the block cached before the seek)", off, err, 100*BlockSize)
	}
}

// TestBackgroundCommitWaitsForDirtyExpire: the background commit leaves
// cached writes alone until the oldest is DirtyExpire old (as the kernel
// leaves a file's dirty pages for vm.dirty_expire_centisecs), then commits
// them; a tree change with nothing cached behind it is committed at the
// next CommitInterval tick as before.
func TestBackgroundCommitWaitsForDirtyExpire(t *testing.T) {
	d := &crashDisk{pc: newPCDisk(t, true)}
	const tick, expire = 20 * time.Millisecond, 800 * time.Millisecond
	opts := d.options(Options{Logger: log.New(io.Discard, "", 0), SegmentBlocks: 64,
		WriteCache: 64 << 20, CommitInterval: tick, DirtyExpire: expire, CompactInterval: -1})
	f, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	ino := createSized(t, f, "a", 16*BlockSize)
	start := time.Now()
	if _, err := f.WriteAt(ino, block(7, 16), 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * tick)
	if time.Since(start) < expire { // a descheduled test proves nothing here
		if ids, _ := d.Store().List(); len(ids) != 0 || f.wc.used.Load() == 0 {
			t.Fatalf("after %v (< %v): %d segments, %d pages cached: committed before the write expired",
				time.Since(start), expire, len(ids), f.wc.used.Load())
		}
	}
	for f.wc.used.Load() != 0 {
		if time.Since(start) > expire+30*time.Second {
			t.Fatalf("cached write not committed %v after it was made", time.Since(start))
		}
		time.Sleep(tick)
	}
	if took := time.Since(start); took < expire {
		t.Fatalf("cached write committed after %v, before DirtyExpire %v", took, expire)
	}
	// The commit is durable: a crash, even a power cut, keeps it. The
	// cache empties before the commit has synced and landed its batch:
	// wait for the commit to end (a cut in the middle may lose it).
	f.commitMu.Lock()
	f.commitMu.Unlock()
	d.crash(f)
	if f, err = Open(d.options(opts)); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := readAll(t, f, ino, 16*BlockSize); !bytes.Equal(got, block(7, 16)) {
		t.Fatal("the background commit's data is not there after a crash")
	}
	// A tree change with nothing cached: the next tick commits it.
	if err := f.Truncate(ino, 8*BlockSize); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for f.trees.Dirty() != 0 {
		if time.Since(start) > 30*time.Second {
			t.Fatal("a tree change was not committed by the background commit")
		}
		time.Sleep(tick)
	}
}
