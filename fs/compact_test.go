package fs

import (
	"bytes"
	"errors"
	"io"
	"log"
	"math/rand"
	"os"
	"reflect"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/meta"
)

// segOf is the segment that holds block blk of a file.
func segOf(t *testing.T, f *FS, ino, blk uint64) blocks.SegmentID {
	t.Helper()
	ms, err := f.trees.Lookup(ino, blk, 1)
	if err != nil || ms[0].Seg == 0 {
		t.Fatalf("block %d of %d: %+v %v", blk, ino, ms, err)
	}
	return blocks.SegmentID(ms[0].Seg)
}

func stored(store blocks.Store, id blocks.SegmentID) bool {
	sf, err := store.Open(id)
	if err == nil {
		sf.Close()
	}
	return err == nil
}

// crash drops an FS the way SIGKILL would: no commit, no close.
func crash(f *FS) {
	f.compactor.Stop()
	close(f.stop)
	<-f.done
	<-f.wbDone
	f.db.Close()
	f.lock.Close()
}

func checkAllClean(t *testing.T, dir string, store blocks.Store) {
	t.Helper()
	rep, err := Check(Options{DataDir: dir, Store: store, Logger: log.New(io.Discard, "", 0), SegmentBlocks: 64})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || rep.CorruptBlocks != 0 || rep.MissingObjects != 0 {
		t.Fatalf("check: %+v %v", rep, rep.Problems)
	}
}

// compactLayout (segments of 64 records): file a of 256 blocks fills S1..S4;
// b shares a's first 64 blocks (S1). Then a keeps only blocks 0..19 of S1
// and b only 10..29: S1 is 30/64 live, but its stored count (20 + 20)
// is not below half, so only a walk finds it. a overwrites 5 of every 8
// blocks of 64..127: S2 is 24/64 live. S3, S4 stay whole.
func compactLayout(t *testing.T, f *FS, m files) (a, b uint64, s1, s2 blocks.SegmentID) {
	t.Helper()
	a, b = create(t, f, "a"), create(t, f, "b")
	m.write(t, f, a, 0, 256, 1)
	s1, s2 = segOf(t, f, a, 0), segOf(t, f, a, 64)
	if s1 == s2 || segOf(t, f, a, 63) != s1 || segOf(t, f, a, 127) != s2 {
		t.Fatal("unexpected segment layout")
	}
	m.copyRange(t, f, a, b, 0, 64)
	m.write(t, f, a, 20, 44, 2)
	m.write(t, f, b, 0, 10, 2)
	m.write(t, f, b, 30, 34, 2)
	for blk := uint64(64); blk < 128; blk++ {
		if blk%8 < 5 {
			m.write(t, f, a, blk, 1, 3)
		}
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	return
}

func TestCompactMovesSharedAndUnsharedBlocks(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openTest(t, dir, store)
	m := files{}
	a, b, s1, s2 := compactLayout(t, f, m)
	if refs := f.trees.SegRefs(); refs[uint64(s1)] != 40 || refs[uint64(s2)] != 24 {
		t.Fatalf("stored counts: %d %d", refs[uint64(s1)], refs[uint64(s2)])
	}
	u0, err := f.Usage()
	if err != nil {
		t.Fatal(err)
	}
	da0, _ := f.Describe(a)
	db0, _ := f.Describe(b)

	st, err := f.Compact()
	if err != nil {
		t.Fatal(err)
	}
	if st.Segments != 2 || st.Moved != 54 || st.Freed != 2*(blocks.SegHeaderSize+64*rec)-54*rec {
		t.Fatalf("compaction: %+v", st)
	}
	if stored(store, s1) || stored(store, s2) {
		t.Fatal("victims still stored")
	}
	m.verify(t, f)
	u1, err := f.Usage()
	if err != nil {
		t.Fatal(err)
	}
	// Nothing a user sees changes but what is stored: S1..S6 held 384
	// records (S6, open, full); the 54 copies start S7 and S1, S2 go.
	if u1.Logical != u0.Logical || u1.Physical != u0.Physical || u1.Saved != u0.Saved || u1.Files != u0.Files {
		t.Fatalf("usage before %+v after %+v", u0, u1)
	}
	if u0.Segments != 6 || u1.Segments != 5 || u0.Stored-u1.Stored != st.Freed-blocks.SegHeaderSize {
		t.Fatalf("stored %d in %d segments -> %d in %d, freed %d", u0.Stored, u0.Segments, u1.Stored, u1.Segments, st.Freed)
	}
	if da, _ := f.Describe(a); !reflect.DeepEqual(da, da0) {
		t.Fatalf("describe a before %+v after %+v", da0, da)
	}
	if db, _ := f.Describe(b); !reflect.DeepEqual(db, db0) {
		t.Fatalf("describe b before %+v after %+v", db0, db)
	}
	// A second pass finds nothing.
	if st, err := f.Compact(); err != nil || st.Segments != 0 || st.Moved != 0 {
		t.Fatalf("second pass: %+v %v", st, err)
	}
	// Compaction is durable on return: a crash keeps it.
	crash(f)
	f = openTest(t, dir, store)
	m.verify(t, f)
	if stored(store, s1) || stored(store, s2) {
		t.Fatal("victims back after a crash")
	}
	f.Close()
	checkAllClean(t, dir, store)
}

// TestCompactCrashBeforeCommit: a crash after the copies were appended
// and the leaves rewritten in memory, before the commit, leaves the old
// state, readable and consistent.
func TestCompactCrashBeforeCommit(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openTest(t, dir, store)
	m := files{}
	_, _, s1, s2 := compactLayout(t, f, m)
	f.cpass.mu.Lock()
	done, moved, errs := f.compactPass(nil)
	f.cpass.mu.Unlock()
	if len(done) != 2 || moved != 54 || len(errs) != 0 {
		t.Fatalf("pass: %d victims, %d moved, %v", len(done), moved, errs)
	}
	m.verify(t, f) // reads follow the in-memory leaves to the copies
	f.log.Sync()   // even with the copies durable
	crash(f)
	f = openTest(t, dir, store)
	m.verify(t, f)
	if !stored(store, s1) || !stored(store, s2) {
		t.Fatal("a victim is gone though its move never committed")
	}
	f.Close()
	checkAllClean(t, dir, store)
}

// TestCompactRefusesCorruptRecord: a victim with a corrupt live record is
// left whole; nothing is copied, every other block still reads, the
// corrupt one still fails, and the other victim is compacted.
func TestCompactRefusesCorruptRecord(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openTest(t, dir, store)
	m := files{}
	a, _, s1, s2 := compactLayout(t, f, m)
	ms, _ := f.trees.Lookup(a, 70, 1) // 70 % 8 = 6: live, in S2
	if blocks.SegmentID(ms[0].Seg) != s2 {
		t.Fatal("unexpected layout")
	}
	store.Corrupt(s2, blocks.RecordOffset(ms[0].Idx)+blocks.RecordHeaderSize+100)
	before := CorruptReads()
	st, err := f.Compact()
	if !errors.Is(err, blocks.ErrChecksum) {
		t.Fatalf("compaction over a corrupt record: %v", err)
	}
	if CorruptReads() != before+1 {
		t.Fatal("corruption not counted")
	}
	// S1 (30 live) was still compacted; S2 is untouched.
	if st.Segments != 1 || st.Moved != 30 || stored(store, s1) || !stored(store, s2) {
		t.Fatalf("compaction: %+v, s1 stored %v, s2 stored %v", st, stored(store, s1), stored(store, s2))
	}
	if refs := f.trees.SegRefs(); refs[uint64(s2)] != 24 {
		t.Fatalf("s2 count %d, want 24", refs[uint64(s2)])
	}
	buf := make([]byte, BlockSize)
	if _, err := f.ReadAt(a, buf, 70*BlockSize); !errors.Is(err, blocks.ErrChecksum) {
		t.Fatalf("corrupt block read: %v", err)
	}
	m[a][70] = nil // not compared below
	for ino, blks := range m {
		for blk, want := range blks {
			if want == nil {
				continue
			}
			if _, err := f.ReadAt(ino, buf, int64(blk)*BlockSize); err != nil || string(buf) != string(want) {
				t.Fatalf("file %d block %d after a refused compaction: %v", ino, blk, err)
			}
		}
	}
	// The background compactor does not retry a refused segment.
	c := &compactor{f: f, sizes: map[uint64]int64{}, refused: map[uint64]bool{}}
	if _, err := f.compact(c); !errors.Is(err, blocks.ErrChecksum) || !c.refused[uint64(s2)] {
		t.Fatalf("background pass: %v, refused %v", err, c.refused)
	}
	c.lastWalk, c.lastRefs = time.Now(), f.trees.SegRefs()
	if c.due() {
		t.Fatal("a refused segment makes the compactor walk again")
	}
	f.Close()
	rep, err := Check(Options{DataDir: dir, Store: store, Logger: log.New(io.Discard, "", 0), SegmentBlocks: 64})
	if err != nil {
		t.Fatal(err)
	}
	if rep.CorruptBlocks != 1 || rep.MissingObjects != 0 || len(rep.Problems) != 1 {
		t.Fatalf("check: %+v %v", rep, rep.Problems)
	}
}

// TestCompactWhileReadingAndWriting: compaction passes run while a reader
// checks a shared file and a writer keeps overwriting another (making new
// victims); every read agrees with the model, and so does the end state
// after a reopen.
func TestCompactWhileReadingAndWriting(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openTest(t, dir, store)
	m := files{}
	_, b, _, _ := compactLayout(t, f, m)
	w := create(t, f, "w")
	m.write(t, f, w, 0, 200, 1)
	want := append([][]byte(nil), m[b]...)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() { // reader of b (never written during the test)
		defer wg.Done()
		buf := make([]byte, len(want)*BlockSize)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := f.ReadAt(b, buf, 0); err != nil {
				errc <- err
				return
			}
			for i, blk := range want {
				if string(buf[i*BlockSize:(i+1)*BlockSize]) != string(blk) {
					errc <- errors.New("reader saw wrong data during compaction")
					return
				}
			}
		}
	}()
	wm := files{w: append([][]byte(nil), m[w]...)}
	var wmu sync.Mutex
	go func() { // writer of w
		defer wg.Done()
		for v := byte(2); ; v++ {
			select {
			case <-stop:
				return
			default:
			}
			for blk := uint64(0); blk < 200; blk += 3 {
				data := pattern(w, blk, v)
				if _, err := f.WriteAt(w, data, int64(blk)*BlockSize); err != nil {
					errc <- err
					return
				}
				wmu.Lock()
				wm[w][blk] = data
				wmu.Unlock()
			}
		}
	}()
	var total CompactStats
	for i := 0; i < 8; i++ {
		st, err := f.Compact()
		if err != nil {
			t.Error(err)
			break
		}
		total.Segments += st.Segments
		total.Moved += st.Moved
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	if total.Segments < 2 {
		t.Fatalf("compacted %d segments, want at least the 2 of the layout", total.Segments)
	}
	m[w] = wm[w]
	m.verify(t, f)
	f.Close()
	checkAllClean(t, dir, store)
	f = openTest(t, dir, store)
	m.verify(t, f)
	f.Close()
}

// TestBackgroundCompactor: the background loop compacts a victim on its
// own and stops cleanly.
func TestBackgroundCompactor(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openTest(t, dir, store)
	m := files{}
	_, _, s1, s2 := compactLayout(t, f, m)
	c := f.runCompactor(10*time.Millisecond, time.Hour)
	deadline := time.Now().Add(60 * time.Second)
	for stored(store, s1) || stored(store, s2) {
		if time.Now().After(deadline) {
			c.Stop()
			t.Fatal("background compaction did not remove the victims within 60 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.Stop()
	c.Stop() // idempotent
	m.verify(t, f)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	checkAllClean(t, dir, store)
}

// TestCompactWithSnapshotAndClone: victims whose live records a snapshot,
// a clone sharing the snapshot's leaf, and the head's own copy of that
// leaf all map. Every head and snapshot reads the same before and after,
// across a crash, and the data dir checks clean.
func TestCompactWithSnapshotAndClone(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openTest(t, dir, store)
	m := files{}
	a := create(t, f, "a")
	m.write(t, f, a, 0, 256, 1) // S1..S4
	s1, s2 := segOf(t, f, a, 0), segOf(t, f, a, 64)
	m.write(t, f, a, 0, 40, 2) // S1: 24 of 64 live
	for blk := uint64(64); blk < 128; blk++ {
		if blk%8 < 5 {
			m.write(t, f, a, blk, 1, 2) // S2: 24 of 64 live
		}
	}
	snap, err := f.SnapshotCreate(a, "s1")
	if err != nil {
		t.Fatal(err)
	}
	snapModel := append([][]byte(nil), m[a]...)
	ca, err := f.CloneWithOrigin(a, meta.RootIno, "c", "a")
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Ino
	m[c] = append([][]byte(nil), m[a]...)
	m.write(t, f, a, 200, 1, 3) // a copies the leaf; the snapshot and c share the original
	verify := func(f *FS) {
		t.Helper()
		m.verify(t, f)
		if got := readSnap(t, f, snap.ID, 300*BlockSize); string(got) != string(bytes.Join(snapModel, nil)) {
			t.Fatal("snapshot differs")
		}
	}
	verify(f)
	u0, _ := f.Usage()
	d0, _ := f.Describe(a)
	st, err := f.Compact()
	if err != nil {
		t.Fatal(err)
	}
	if st.Segments != 2 || st.Moved != 48 || stored(store, s1) || stored(store, s2) {
		t.Fatalf("compaction: %+v", st)
	}
	verify(f)
	u1, _ := f.Usage()
	d1, _ := f.Describe(a)
	if u1.Physical != u0.Physical || u1.Logical != u0.Logical || u1.SnapshotLogical != u0.SnapshotLogical ||
		!reflect.DeepEqual(d0, d1) {
		t.Fatalf("usage %+v -> %+v, describe %+v -> %+v", u0, u1, d0, d1)
	}
	crash(f)
	f = openTest(t, dir, store)
	verify(f)
	f.Close()
	checkAllClean(t, dir, store)
}

// TestCompactorWalksOnlyWhenWorthIt: a segment whose records are shared
// (stored count above half, true live below half) is found only by a
// walk, which the background compactor makes at most every walkEvery and
// only when the counts changed since its last walk.
func TestCompactorWalksOnlyWhenWorthIt(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openTest(t, dir, store)
	defer f.Close()
	m := files{}
	a, b := create(t, f, "a"), create(t, f, "b")
	m.write(t, f, a, 0, 128, 1) // S1, S2
	s1 := segOf(t, f, a, 0)
	m.copyRange(t, f, a, b, 0, 64)
	m.write(t, f, a, 20, 44, 2)
	m.write(t, f, b, 0, 10, 2)
	m.write(t, f, b, 30, 34, 2) // S1: 30 live, counted 40
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := f.trees.SegRefs()[uint64(s1)]; n != 40 {
		t.Fatalf("S1 count %d, want 40", n)
	}
	// A compactor just started (a mount) does not walk at its first tick.
	started := f.runCompactor(time.Hour, time.Hour)
	due := started.due()
	started.Stop()
	if due {
		t.Fatal("a compactor just started is due for a speculative walk")
	}
	c := &compactor{f: f, walkEvery: time.Hour, sizes: map[uint64]int64{}, refused: map[uint64]bool{}}
	c.lastWalk, c.lastRefs = time.Now(), f.trees.SegRefs()
	if c.due() {
		t.Fatal("due without a cheap candidate, within walkEvery")
	}
	c.lastWalk = time.Now().Add(-2 * time.Hour)
	if c.due() {
		t.Fatal("due though nothing changed since the last walk")
	}
	m.write(t, f, a, 100, 1, 3)
	if !c.due() {
		t.Fatal("not due after walkEvery with changed counts")
	}
	c.tick()
	if stored(store, s1) {
		t.Fatal("the pass did not compact the shared segment")
	}
	if c.due() {
		t.Fatal("due right after a walk")
	}
	m.verify(t, f)
}

// TestCompactModel: random writes, copies, snapshots, clones, deletions
// and compaction passes against a model of every file and snapshot, with
// crashes after commits; every read agrees, and the data dir checks clean.
func TestCompactModel(t *testing.T) {
	seed := rand.Int63()
	if s := os.Getenv("VAFS_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("seed %d (replay with VAFS_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewSource(seed))
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openTest(t, dir, store)
	m := files{}
	snaps := map[uint64][][]byte{} // snapshot id -> content
	snapOf := map[uint64]uint64{}  // snapshot id -> file
	names := map[uint64]string{}
	next := 0
	newFile := func() uint64 {
		next++
		name := "f" + strconv.Itoa(next)
		ino := create(t, f, name)
		names[ino] = name
		m[ino] = nil
		return ino
	}
	pick := func() uint64 {
		inos := make([]uint64, 0, len(m))
		for ino := range m {
			inos = append(inos, ino)
		}
		sort.Slice(inos, func(i, j int) bool { return inos[i] < inos[j] })
		return inos[rng.Intn(len(inos))]
	}
	newFile()
	newFile()
	verify := func() {
		t.Helper()
		m.verify(t, f)
		for id, want := range snaps {
			if got := readSnap(t, f, id, (len(want)+1)*BlockSize); !bytes.Equal(got, bytes.Join(want, nil)) {
				t.Fatalf("snapshot %d of file %d differs", id, snapOf[id])
			}
		}
	}
	var compacted int
	for step := 0; step < 160; step++ {
		switch r := rng.Intn(100); {
		case r < 45:
			ino := pick()
			first := uint64(rng.Intn(250))
			m.write(t, f, ino, first, uint64(rng.Intn(40)+1), byte(step))
		case r < 52:
			src, dst := pick(), pick()
			if src != dst && len(m[src]) > 2 {
				first := uint64(rng.Intn(len(m[src]) - 1))
				n := uint64(rng.Intn(len(m[src])-int(first)-1) + 2)
				m.copyRange(t, f, src, dst, first, n)
			}
		case r < 60 && len(snaps) < 5:
			ino := pick()
			s, err := f.SnapshotCreate(ino, "s"+strconv.Itoa(step))
			if err != nil {
				t.Fatal(err)
			}
			snaps[s.ID] = append([][]byte(nil), m[ino]...)
			snapOf[s.ID] = ino
		case r < 64 && len(snaps) > 0:
			for id := range snaps {
				s, err := f.SnapshotByID(id)
				if err != nil {
					t.Fatal(err)
				}
				if err := f.SnapshotDelete(s.Vol, s.Name); err != nil {
					t.Fatal(err)
				}
				delete(snaps, id)
				break
			}
		case r < 68 && len(m) < 6:
			src := pick()
			next++
			name := "f" + strconv.Itoa(next)
			a, err := f.Clone(src, meta.RootIno, name)
			if err != nil {
				t.Fatal(err)
			}
			names[a.Ino] = name
			m[a.Ino] = append([][]byte(nil), m[src]...)
		case r < 71 && len(m) > 2:
			ino := pick()
			if err := f.Unlink(meta.RootIno, names[ino]); err != nil {
				t.Fatal(err)
			}
			delete(m, ino)
			for id, vol := range snapOf {
				if vol == ino {
					delete(snaps, id) // a file's snapshots go with it
					delete(snapOf, id)
				}
			}
		case r < 85:
			st, err := f.Compact()
			if err != nil {
				t.Fatal(err)
			}
			compacted += st.Segments
		case r < 94:
			if err := f.Commit(); err != nil {
				t.Fatal(err)
			}
			if rng.Intn(3) == 0 {
				crash(f)
				f = openTest(t, dir, store)
			}
		default:
			verify()
		}
	}
	verify()
	if compacted == 0 {
		t.Fatal("no segment was ever compacted")
	}
	t.Logf("%d segments compacted", compacted)
	f.Close()
	checkAllClean(t, dir, store)
	f = openTest(t, dir, store)
	verify()
	f.Close()
}

// TestCompactRacesWritesPunchesCopiesSnapshots: between a pass's copies of
// a victim and the step that redirects its leaves (the hook), blocks that
// live in the victim are overwritten, punched, shared into another file by
// copy_file_range, and snapshotted then overwritten (the head copies a
// leaf the snapshot keeps). The newest value of every block wins (an
// overwritten or punched block is not put back to its old record's copy),
// the new leaves (the copy's, the head's copy) are redirected too, both
// victims go in the same pass, and all of it survives a crash.
func TestCompactRacesWritesPunchesCopiesSnapshots(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openTest(t, dir, store)
	m := files{}
	a, b, s1, s2 := compactLayout(t, f, m)
	c := create(t, f, "c")
	var snap Snapshot
	var snapModel [][]byte
	var hooked []blocks.SegmentID
	f.cpass.hook = func(v blocks.SegmentID) {
		hooked = append(hooked, v)
		switch v {
		case s2: // a's blocks 64..127 with blk%8 >= 5 live here
			if segOf(t, f, a, 69) != s2 || segOf(t, f, a, 77) != s2 {
				t.Error("unexpected layout")
			}
			m.write(t, f, a, 69, 1, 7)
			if err := f.Fallocate(a, FallocPunchHole|FallocKeepSize, 70*BlockSize, BlockSize); err != nil {
				t.Error(err)
			}
			m[a][70] = make([]byte, BlockSize)
			m.copyRange(t, f, a, c, 71, 1) // c's new leaf maps a record of s2
			var err error
			if snap, err = f.SnapshotCreate(a, "s"); err != nil {
				t.Error(err)
			}
			snapModel = append([][]byte(nil), m[a]...)
			m.write(t, f, a, 77, 1, 8) // a copies the leaf; the snapshot keeps it
		case s1: // a's 0..19 and b's 10..29 live here
			m.write(t, f, b, 15, 1, 9)
			if err := f.Fallocate(a, FallocPunchHole|FallocKeepSize, 5*BlockSize, BlockSize); err != nil {
				t.Error(err)
			}
			m[a][5] = make([]byte, BlockSize)
		}
	}
	st, err := f.Compact()
	f.cpass.hook = nil
	if err != nil {
		t.Fatal(err)
	}
	if len(hooked) != 2 || st.Segments != 2 || stored(store, s1) || stored(store, s2) {
		t.Fatalf("pass over %v: %+v; s1 stored %v, s2 stored %v", hooked, st, stored(store, s1), stored(store, s2))
	}
	verify := func(f *FS) {
		t.Helper()
		m.verify(t, f)
		if got := readSnap(t, f, snap.ID, 300*BlockSize); !bytes.Equal(got, bytes.Join(snapModel, nil)) {
			t.Fatal("snapshot differs")
		}
	}
	verify(f)
	for _, blk := range []uint64{69, 70, 5} {
		if ms, _ := f.trees.Lookup(a, blk, 1); blk != 69 && ms[0].Seg != 0 {
			t.Fatalf("punched block %d of a is mapped again: %+v", blk, ms)
		}
	}
	_ = b
	crash(f)
	f = openTest(t, dir, store)
	verify(f)
	f.Close()
	checkAllClean(t, dir, store)
}

// TestCompactDoesNotStopWriters: while a pass is parked between its copies
// and its validating step, writes to another file and to the victim's
// file, an fsync and a commit all complete.
func TestCompactDoesNotStopWriters(t *testing.T) {
	dir, store := t.TempDir(), blocks.NewMemStore()
	f := openTest(t, dir, store)
	m := files{}
	a, _, s1, s2 := compactLayout(t, f, m)
	w := create(t, f, "w")
	m.write(t, f, w, 0, 8, 1)
	parked, release := make(chan struct{}), make(chan struct{})
	f.cpass.hook = func(v blocks.SegmentID) {
		if v == s2 {
			close(parked)
			<-release
		}
	}
	type result struct {
		st  CompactStats
		err error
	}
	passDone := make(chan result, 1)
	go func() {
		st, err := f.Compact()
		passDone <- result{st, err}
	}()
	select {
	case <-parked:
	case <-time.After(30 * time.Second):
		t.Fatal("the pass never reached its hook")
	}
	opsDone := make(chan error, 1)
	go func() {
		var errs []error
		for i := uint64(0); i < 8; i++ {
			_, err := f.WriteAt(w, pattern(w, i, 2), int64(i*BlockSize))
			errs = append(errs, err)
		}
		_, err := f.WriteAt(a, pattern(a, 200, 2), 200*BlockSize)
		errs = append(errs, err, f.Fsync(w), f.Commit())
		opsDone <- errors.Join(errs...)
	}()
	select {
	case err := <-opsDone:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Error("writes, fsync and commit waited for the parked compaction pass")
	}
	close(release)
	r := <-passDone
	f.cpass.hook = nil
	if r.err != nil || r.st.Segments != 2 || stored(store, s1) || stored(store, s2) {
		t.Fatalf("pass: %+v %v", r.st, r.err)
	}
	if t.Failed() {
		return
	}
	for i := uint64(0); i < 8; i++ {
		m[w][i] = pattern(w, i, 2)
	}
	m[a][200] = pattern(a, 200, 2)
	m.verify(t, f)
	f.Close()
	checkAllClean(t, dir, store)
}
