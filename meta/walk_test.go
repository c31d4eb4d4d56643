package meta

import (
	"math/rand"
	"os"
	"strconv"
	"testing"

	"github.com/cockroachdb/pebble/vfs"
)

// records lists the distinct records a tree maps, read through Lookup (the
// reference the walker is checked against).
func records(t *testing.T, tr *Trees, h Head, into map[ref]bool) {
	t.Helper()
	ms, err := tr.LookupHead(h, 0, span(int(max(h.Height, 1))-1))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		for i := uint64(0); i < m.N && m.Seg != 0; i++ {
			into[ref{m.Seg, m.Idx + uint32(i)}] = true
		}
	}
}

func withSnaps(t *testing.T, tr *Trees, snaps ...Head) []Root {
	t.Helper()
	roots, err := tr.Roots()
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range snaps {
		roots = append(roots, Root{Vol: 1000, Snap: uint64(i + 1), Head: h})
	}
	return roots
}

// checkLive compares a walk with the records every root maps through
// Lookup, and the walk's reference counts with the stored segment counts.
func checkLive(t *testing.T, tr *Trees, roots []Root, l *Live) {
	t.Helper()
	want := map[ref]bool{}
	for _, r := range roots {
		records(t, tr, r.Head, want)
	}
	if l.Total() != uint64(len(want)) {
		t.Fatalf("walk found %d live records, the trees map %d", l.Total(), len(want))
	}
	for r := range want {
		if !l.Has(r.seg, r.idx) {
			t.Fatalf("record %+v is mapped but not live", r)
		}
	}
	stored := tr.SegRefs()
	for _, seg := range l.Segments() {
		if l.Refs(seg) != stored[seg] {
			t.Fatalf("segment %d: walk counts %d references, stored %d", seg, l.Refs(seg), stored[seg])
		}
		delete(stored, seg)
	}
	if len(stored) != 0 {
		t.Fatalf("stored counts for segments no tree reaches: %v", stored)
	}
}

// TestWalkLiveKnownLayout: a head, a snapshot of it, a clone, a partial
// copy into a third volume, and overwrites in each; exact live counts.
func TestWalkLiveKnownLayout(t *testing.T) {
	fs := vfs.NewMem()
	db, tr := openMem(t, fs)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tr.Map(1, 0, 100, 1, 0))
	snap, err := tr.Freeze(1)
	must(err)
	must(tr.Map(1, 0, 50, 2, 0)) // vol 1: seg1 50..99, seg2 0..49
	clone, err := tr.Freeze(1)
	must(err)
	must(tr.SetHead(2, clone))
	must(tr.DropFrozen(clone))
	must(tr.Map(2, 50, 10, 2, 50)) // vol 2: seg2 0..59, seg1 60..99
	must(tr.Map(3, 0, 10, 1, 90))  // vol 3 shares seg1 90..99 through its own leaf
	commit(t, db, tr)

	for round := 0; round < 2; round++ {
		// Heads only: seg1 50..99 and seg2 0..59 are live.
		heads, _ := tr.Roots()
		if len(heads) != 3 {
			t.Fatalf("%d roots, want 3 heads", len(heads))
		}
		l, err := tr.WalkLive(heads, 64)
		must(err)
		if l.Count(1) != 50 || l.Count(2) != 60 || l.Total() != 110 {
			t.Fatalf("heads: seg1 %d seg2 %d total %d", l.Count(1), l.Count(2), l.Total())
		}
		if l.Has(1, 49) || !l.Has(1, 50) || !l.Has(2, 59) || l.Has(2, 60) {
			t.Fatal("wrong records live")
		}
		if idx := l.Indexes(2); len(idx) != 60 || idx[0] != 0 || idx[59] != 59 {
			t.Fatalf("indexes of seg2: %v", idx)
		}
		// With the snapshot every record of seg1 is live, and the walk's
		// counts are exactly the stored ones.
		all := withSnaps(t, tr, snap)
		l, err = tr.WalkLive(all, 64)
		must(err)
		if l.Count(1) != 100 || l.Count(2) != 60 {
			t.Fatalf("with snapshot: seg1 %d seg2 %d", l.Count(1), l.Count(2))
		}
		// Leaves: the snapshot's, vol 1's, vol 2's and vol 3's map seg1;
		// vol 1's and vol 2's map seg2.
		if len(l.Leaves(1)) != 4 || len(l.Leaves(2)) != 2 {
			t.Fatalf("leaves into seg1 %v, seg2 %v", l.Leaves(1), l.Leaves(2))
		}
		checkLive(t, tr, all, l)
		db.Close() // and again from Pebble
		db, tr = openMem(t, fs)
	}
}

// TestWalkLiveModel: random trees with snapshots and clones; the walk
// agrees with Lookup on every root and with the stored counts.
func TestWalkLiveModel(t *testing.T) {
	seed := rand.Int63()
	if s := os.Getenv("VAFS_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("seed %d (replay with VAFS_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewSource(seed))
	fs := vfs.NewMem()
	db, tr := openMem(t, fs)
	var snaps []Head
	space := uint64(600000) // height 3
	nextSeg := uint64(1)
	for step := 0; step < 400; step++ {
		vol := uint64(rng.Intn(3) + 1)
		switch r := rng.Intn(100); {
		case r < 60:
			first := uint64(rng.Int63n(int64(space)))
			n := uint64(rng.Intn(1500) + 1)
			if err := tr.Map(vol, first, n, nextSeg, uint32(rng.Intn(100))); err != nil {
				t.Fatal(err)
			}
			nextSeg++
		case r < 70:
			if err := tr.Punch(vol, uint64(rng.Int63n(int64(space))), uint64(rng.Intn(3000)+1)); err != nil {
				t.Fatal(err)
			}
		case r < 78:
			h, err := tr.Freeze(vol)
			if err != nil {
				t.Fatal(err)
			}
			snaps = append(snaps, h)
		case r < 82 && len(snaps) > 0:
			if err := tr.SetHead(vol, snaps[rng.Intn(len(snaps))]); err != nil {
				t.Fatal(err)
			}
		case r < 86 && len(snaps) > 0:
			i := rng.Intn(len(snaps))
			tr.DropFrozen(snaps[i])
			snaps = append(snaps[:i], snaps[i+1:]...)
		case r < 97:
			commit(t, db, tr)
			if rng.Intn(3) == 0 {
				db.Close()
				db, tr = openMem(t, fs)
			}
		default:
			roots := withSnaps(t, tr, snaps...)
			l, err := tr.WalkLive(roots, 1)
			if err != nil {
				t.Fatal(err)
			}
			checkLive(t, tr, roots, l)
		}
	}
	roots := withSnaps(t, tr, snaps...)
	l, err := tr.WalkLive(roots, 16384)
	if err != nil {
		t.Fatal(err)
	}
	checkLive(t, tr, roots, l)
}

// BenchmarkWalkLive: a 10 GiB volume written in 64 KiB random-order
// chunks (16-block extents), one snapshot, and a clone; the walk is what
// describe, df and every compaction pass pay with writers held off.
func BenchmarkWalkLive(b *testing.B) {
	db, err := Open("meta", vfs.NewMem())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	tr, err := OpenTrees(db)
	if err != nil {
		b.Fatal(err)
	}
	const blocks = 10 << 30 >> 12
	rng := rand.New(rand.NewSource(1))
	seg, idx := uint64(1), uint32(0)
	for _, c := range rng.Perm(blocks / 16) {
		if err := tr.Map(1, uint64(c)*16, 16, seg, idx); err != nil {
			b.Fatal(err)
		}
		if idx += 16; idx == 16384 {
			seg, idx = seg+1, 0
		}
	}
	tr.CreateSnapshot(1, "s", 0)
	tr.Clone(1, 2, 0)
	tr.Map(2, 0, 1000, seg+1, 0)
	b2 := db.NewBatch()
	tr.Flush(b2)
	if err := b2.Commit(false); err != nil {
		b.Fatal(err)
	}
	roots, _ := tr.Roots()
	b.Run("cached", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			l, err := tr.WalkLive(roots, 16384)
			if err != nil || l.Total() != blocks+1000 {
				b.Fatalf("%v %d", err, l.Total())
			}
		}
	})
	b.Run("from-pebble", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			cold, err := OpenTrees(db)
			if err != nil {
				b.Fatal(err)
			}
			l, err := cold.WalkLive(roots, 16384)
			if err != nil || l.Total() != blocks+1000 {
				b.Fatalf("%v %d", err, l.Total())
			}
		}
	})
}
