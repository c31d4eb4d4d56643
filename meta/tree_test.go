package meta

import (
	"math/rand"
	"os"
	"strconv"
	"testing"

	"github.com/cockroachdb/pebble/vfs"
)

type ref struct {
	seg uint64
	idx uint32
}

// model is the trivial truth: block -> ref.
type model map[uint64]ref

func openMem(t *testing.T, fs vfs.FS) (*DB, *Trees) {
	t.Helper()
	db, err := Open("meta", fs)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := OpenTrees(db)
	if err != nil {
		t.Fatal(err)
	}
	return db, tr
}

func commit(t *testing.T, db *DB, tr *Trees) []uint64 {
	t.Helper()
	b := db.NewBatch()
	f := tr.Flush(b)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	return f.Dead
}

func checkAgainst(t *testing.T, got []Mapping, m model, first, n uint64) {
	t.Helper()
	next := first
	for _, mp := range got {
		if mp.Block != next || mp.N == 0 {
			t.Fatalf("mapping %+v does not continue at %d", mp, next)
		}
		if mp.Seg == 0 && mp.N > uint64(len(m)) {
			for b, want := range m {
				if b >= mp.Block && b < mp.Block+mp.N {
					t.Fatalf("block %d: hole, want %+v", b, want)
				}
			}
			next += mp.N
			continue
		}
		for i := uint64(0); i < mp.N; i++ {
			want, ok := m[mp.Block+i]
			if mp.Seg == 0 {
				if ok {
					t.Fatalf("block %d: hole, want %+v", mp.Block+i, want)
				}
				continue
			}
			if g := (ref{mp.Seg, mp.Idx + uint32(i)}); !ok || g != want {
				t.Fatalf("block %d: %+v, want %+v (present %v)", mp.Block+i, g, want, ok)
			}
		}
		next += mp.N
	}
	if next != first+n {
		t.Fatalf("mappings end at %d, want %d", next, first+n)
	}
}

func TestSnapshotKeepsOldVersion(t *testing.T) {
	fs := vfs.NewMem()
	db, tr := openMem(t, fs)
	const vol = 7
	if err := tr.Map(vol, 0, 2000, 100, 0); err != nil {
		t.Fatal(err)
	}
	frozen, err := tr.Freeze(vol)
	if err != nil {
		t.Fatal(err)
	}
	// Keep writing the head: overwrite the middle, punch a bit, extend.
	tr.Map(vol, 500, 10, 200, 0)
	tr.Punch(vol, 1000, 24)
	tr.Map(vol, 1<<30, 3, 300, 5) // grows the tree
	commit(t, db, tr)

	old := model{}
	for b := uint64(0); b < 2000; b++ {
		old[b] = ref{100, uint32(b)}
	}
	cur := model{}
	for k, v := range old {
		cur[k] = v
	}
	for b := uint64(500); b < 510; b++ {
		cur[b] = ref{200, uint32(b - 500)}
	}
	for b := uint64(1000); b < 1024; b++ {
		delete(cur, b)
	}
	for i := uint64(0); i < 3; i++ {
		cur[1<<30+i] = ref{300, uint32(5 + i)}
	}
	// Read both versions, then again from Pebble after a reopen.
	for round := 0; round < 2; round++ {
		got, err := tr.LookupHead(frozen, 0, 4096)
		if err != nil {
			t.Fatal(err)
		}
		checkAgainst(t, got, old, 0, 4096)
		got, _ = tr.Lookup(vol, 0, 4096)
		checkAgainst(t, got, cur, 0, 4096)
		got, _ = tr.Lookup(vol, 1<<30-2, 8)
		checkAgainst(t, got, cur, 1<<30-2, 8)
		db.Close()
		db, tr = openMem(t, fs)
	}
	refs := tr.SegRefs()
	if refs[100] != 2000+(512-10)+(512-24) || refs[200] != 10 || refs[300] != 3 {
		t.Fatalf("segment refs %v", refs)
	}
	// Dropping both leaves nothing behind.
	if err := tr.DropFrozen(frozen); err != nil {
		t.Fatal(err)
	}
	if err := tr.DeleteVolume(vol); err != nil {
		t.Fatal(err)
	}
	dead := commit(t, db, tr)
	if len(dead) != 3 || len(tr.SegRefs()) != 0 {
		t.Fatalf("dead %v, refs left %v", dead, tr.SegRefs())
	}
	assertNoKeys(t, db, pfxNode, pfxRef, pfxHead, pfxSegment)
}

func assertNoKeys(t *testing.T, db *DB, pfxs ...byte) {
	t.Helper()
	for _, p := range pfxs {
		n := 0
		db.scan([]byte{p}, func(k, v []byte) bool { n++; return true })
		if n != 0 {
			t.Errorf("%d keys with prefix %q left", n, p)
		}
	}
}

// TestTreeModel runs random maps, punches, freezes, clones and drops
// against a map model, with commits and reopens in between.
func TestTreeModel(t *testing.T) {
	seed := rand.Int63()
	if s := os.Getenv("VAFS_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("seed %d (replay with VAFS_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewSource(seed))
	fs := vfs.NewMem()
	db, tr := openMem(t, fs)
	type frozenT struct {
		h Head
		m model
	}
	vols := map[uint64]model{1: {}, 2: {}}
	var frozen []frozenT
	nextSeg := uint64(1)
	space := uint64(3000)
	if rng.Intn(2) == 0 {
		space = 1 << 22
	}
	pick := func() uint64 { return uint64(rng.Intn(2) + 1) }
	for step := 0; step < 3000; step++ {
		vol := pick()
		m := vols[vol]
		switch r := rng.Intn(100); {
		case r < 50:
			first := uint64(rng.Int63n(int64(space)))
			n := uint64(rng.Intn(700) + 1)
			seg := nextSeg
			nextSeg++
			if err := tr.Map(vol, first, n, seg, 0); err != nil {
				t.Fatal(err)
			}
			for i := uint64(0); i < n; i++ {
				m[first+i] = ref{seg, uint32(i)}
			}
		case r < 65:
			first := uint64(rng.Int63n(int64(space)))
			n := uint64(rng.Intn(2000) + 1)
			if err := tr.Punch(vol, first, n); err != nil {
				t.Fatal(err)
			}
			for i := uint64(0); i < n; i++ {
				delete(m, first+i)
			}
		case r < 72:
			h, err := tr.Freeze(vol)
			if err != nil {
				t.Fatal(err)
			}
			c := model{}
			for k, v := range m {
				c[k] = v
			}
			frozen = append(frozen, frozenT{h, c})
		case r < 76 && len(frozen) > 0:
			i := rng.Intn(len(frozen))
			if err := tr.SetHead(vol, frozen[i].h); err != nil {
				t.Fatal(err)
			}
			c := model{}
			for k, v := range frozen[i].m {
				c[k] = v
			}
			vols[vol] = c
		case r < 80 && len(frozen) > 0:
			i := rng.Intn(len(frozen))
			if err := tr.DropFrozen(frozen[i].h); err != nil {
				t.Fatal(err)
			}
			frozen = append(frozen[:i], frozen[i+1:]...)
		case r < 82:
			if err := tr.DeleteVolume(vol); err != nil {
				t.Fatal(err)
			}
			vols[vol] = model{}
		case r < 88:
			commit(t, db, tr)
			if rng.Intn(3) == 0 {
				db.Close()
				db, tr = openMem(t, fs)
			}
		default:
			first := uint64(rng.Int63n(int64(space)))
			n := uint64(rng.Intn(3000) + 1)
			got, err := tr.Lookup(vol, first, n)
			if err != nil {
				t.Fatal(err)
			}
			checkAgainst(t, got, m, first, n)
		}
	}
	// Every version reads right; then dropping everything leaks nothing.
	for vol, m := range vols {
		got, err := tr.Lookup(vol, 0, space+3000)
		if err != nil {
			t.Fatal(err)
		}
		checkAgainst(t, got, m, 0, space+3000)
		h, _ := tr.Head(vol)
		if h.Blocks != uint64(len(m)) {
			t.Fatalf("volume %d counts %d blocks, model %d", vol, h.Blocks, len(m))
		}
	}
	for _, f := range frozen {
		got, _ := tr.LookupHead(f.h, 0, space+3000)
		checkAgainst(t, got, f.m, 0, space+3000)
		tr.DropFrozen(f.h)
	}
	tr.DeleteVolume(1)
	tr.DeleteVolume(2)
	commit(t, db, tr)
	if refs := tr.SegRefs(); len(refs) != 0 {
		t.Fatalf("segment references left: %v", refs)
	}
	assertNoKeys(t, db, pfxNode, pfxRef, pfxHead, pfxSegment)
}

func FuzzDecodeNode(f *testing.F) {
	f.Add(encodeNode(&node{level: 0, gen: 3, ext: []extent{{0, 4, 9, 1}, {10, 500, 7, 0}}}))
	f.Add(encodeNode(&node{level: 2, gen: 1, kids: []child{{0, 5, 10}, {511, 6, 1}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := decodeNode(1, b)
		if err != nil {
			return
		}
		again, err := decodeNode(1, encodeNode(n))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if len(again.ext) != len(n.ext) || len(again.kids) != len(n.kids) || again.gen != n.gen {
			t.Fatal("round trip differs")
		}
	})
}

func TestCheckFindsBadRefcount(t *testing.T) {
	db, tr := openMem(t, vfs.NewMem())
	tr.Map(1, 0, 5000, 9, 0)
	tr.Freeze(1) // the frozen head is not stored: its reference is a leak Check must see
	commit(t, db, tr)
	r, err := tr.Check(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) == 0 {
		t.Fatal("Check missed a refcount with no owner")
	}
	db2, tr2 := openMem(t, vfs.NewMem())
	tr2.Map(1, 0, 5000, 9, 0)
	tr2.Map(2, 100, 7, 10, 3)
	commit(t, db2, tr2)
	r, _ = tr2.Check(nil)
	if len(r.Problems) != 0 || r.Blocks != 5007 || r.Heads != 2 {
		t.Fatalf("clean trees: %+v", r)
	}
}
