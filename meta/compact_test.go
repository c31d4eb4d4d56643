package meta

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/vfs"
)

// mapped reads a whole tree into a model.
func mapped(t *testing.T, tr *Trees, h Head) model {
	t.Helper()
	m := model{}
	if h.Height == 0 {
		return m
	}
	ms, err := tr.LookupHead(h, 0, span(int(h.Height)-1))
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range ms {
		for i := uint64(0); i < mp.N && mp.Seg != 0; i++ {
			m[mp.Block+i] = ref{mp.Seg, mp.Idx + uint32(i)}
		}
	}
	return m
}

func sameModel(t *testing.T, what string, got, want model) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d blocks mapped, want %d", what, len(got), len(want))
	}
	for b, r := range want {
		if got[b] != r {
			t.Fatalf("%s: block %d -> %+v, want %+v", what, b, got[b], r)
		}
	}
}

// layout builds: vol 1 written as seg1 0..99, snapshot, vol 1 blocks 0..49
// overwritten (seg2), vol 2 a clone of vol 1 with blocks 50..59
// overwritten, vol 3 sharing seg1 90..99 (at block 600) through its own leaf.
func layout(t *testing.T, tr *Trees) (snap Head) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tr.Map(1, 0, 100, 1, 0))
	snap, err := tr.Freeze(1)
	must(err)
	must(tr.Map(1, 0, 50, 2, 0))
	clone, err := tr.Freeze(1)
	must(err)
	must(tr.SetHead(2, clone))
	must(tr.DropFrozen(clone))
	must(tr.Map(2, 50, 10, 2, 50))
	must(tr.Map(3, 600, 10, 1, 90)) // height 2: its root is not a leaf
	return snap
}

// TestRelocateSharedLeaves moves every live record of a segment that a
// snapshot, a head, a clone and a copy all map, to places that are partly
// contiguous and partly not; every tree reads the moved records, the
// victim's count reaches 0 and it is reported dead, across a reopen, and
// Check is clean with the snapshot and after it is deleted.
func TestRelocateSharedLeaves(t *testing.T) {
	fs := vfs.NewMem()
	db, tr := openMem(t, fs)
	snap := layout(t, tr)
	if _, err := tr.CreateSnapshot(1, "s", 1); err != nil { // a snapshot of vol 1 as it is now, too
		t.Fatal(err)
	}
	commit(t, db, tr)
	roots := withSnaps(t, tr, snap)
	if len(roots) != 5 {
		t.Fatalf("%d roots, want 3 heads, a snapshot and a frozen head", len(roots))
	}
	before := map[int]model{}
	for i, r := range roots {
		before[i] = mapped(t, tr, r.Head)
	}
	l, err := tr.WalkLive(roots, 128)
	if err != nil {
		t.Fatal(err)
	}
	// Records 0..69 go to seg 10 from index 5 on (one run), 70..99 to seg
	// 11 in reverse order (a run each).
	moved := make([]Loc, 128)
	for _, idx := range l.Indexes(1) {
		if idx < 70 {
			moved[idx] = Loc{10, idx + 5}
		} else {
			moved[idx] = Loc{11, 99 - idx}
		}
	}
	n, err := tr.Relocate(1, l.Leaves(1), moved, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 { // the frozen head's, vol 1's (shared with the snapshot), vol 2's, vol 3's
		t.Fatalf("%d leaves rewritten, want 4", n)
	}
	translate := func(m model) model {
		out := model{}
		for b, r := range m {
			if r.seg == 1 {
				r = ref{moved[r.idx].Seg, moved[r.idx].Idx}
			}
			out[b] = r
		}
		return out
	}
	dead := commit(t, db, tr)
	if len(dead) != 1 || dead[0] != 1 {
		t.Fatalf("dead after relocation: %v, want [1]", dead)
	}
	for round := 0; round < 2; round++ {
		for i, r := range roots {
			sameModel(t, "root "+string(rune('0'+i)), mapped(t, tr, r.Head), translate(before[i]))
		}
		l, err := tr.WalkLive(roots, 128)
		if err != nil {
			t.Fatal(err)
		}
		if l.Count(1) != 0 || l.Count(10) != 70 || l.Count(11) != 30 {
			t.Fatalf("after: seg1 %d seg10 %d seg11 %d", l.Count(1), l.Count(10), l.Count(11))
		}
		checkLive(t, tr, roots, l)
		db.Close()
		db, tr = openMem(t, fs)
	}
	check := func() {
		t.Helper()
		r, err := tr.Check(nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Problems) != 0 {
			t.Fatalf("check after relocation: %v", r.Problems)
		}
	}
	// The frozen head is not a stored root: drop it, then Check (heads
	// and the snapshot) is clean; the rewritten leaves free with the
	// moved counts when the snapshot goes too.
	if err := tr.DropFrozen(snap); err != nil {
		t.Fatal(err)
	}
	commit(t, db, tr)
	check()
	if err := tr.DeleteSnapshot(1, "s"); err != nil {
		t.Fatal(err)
	}
	commit(t, db, tr)
	check()
}

// TestRelocateCoalesces: records moved right after a neighbouring extent
// of the same leaf join it.
func TestRelocateCoalesces(t *testing.T) {
	db, tr := openMem(t, vfs.NewMem())
	tr.Map(1, 0, 10, 5, 0)
	tr.Map(1, 10, 10, 1, 0)
	tr.Map(1, 20, 10, 5, 20)
	commit(t, db, tr)
	roots, _ := tr.Roots()
	l, _ := tr.WalkLive(roots, 16)
	moved := make([]Loc, 10)
	for i := range moved {
		moved[i] = Loc{5, uint32(10 + i)}
	}
	if _, err := tr.Relocate(1, l.Leaves(1), moved, nil); err != nil {
		t.Fatal(err)
	}
	ms, _ := tr.Lookup(1, 0, 30)
	if len(ms) != 1 || ms[0] != (Mapping{Block: 0, N: 30, Seg: 5, Idx: 0}) {
		t.Fatalf("mappings after relocation: %+v, want one run", ms)
	}
	if refs := tr.SegRefs(); refs[5] != 30 || refs[1] != 0 {
		t.Fatalf("segment counts %v", refs)
	}
}

// TestRelocateRefuses: a record not moved, a missing leaf, or a walk that
// missed a root (its leaves are not in the list) is refused with nothing
// changed.
func TestRelocateRefuses(t *testing.T) {
	db, tr := openMem(t, vfs.NewMem())
	snap := layout(t, tr)
	commit(t, db, tr)
	all := withSnaps(t, tr, snap)
	full, _ := tr.WalkLive(all, 128)
	heads, _ := tr.Roots()
	partial, _ := tr.WalkLive(heads, 128)
	every := make([]Loc, 100)
	for i := range every {
		every[i] = Loc{10, uint32(i)}
	}
	holey := append([]Loc(nil), every...)
	holey[95] = Loc{}
	refs0 := tr.SegRefs()
	want := map[int]model{}
	for i, r := range all {
		want[i] = mapped(t, tr, r.Head)
	}
	cases := []struct {
		name   string
		leaves []uint64
		moved  []Loc
	}{
		{"record not moved", full.Leaves(1), holey},
		{"leaf left out", full.Leaves(1)[1:], every},
		{"root not walked", partial.Leaves(1), every},
		{"not a leaf", append([]uint64{all[2].Head.Root}, full.Leaves(1)...), every},
	}
	for _, c := range cases {
		if _, err := tr.Relocate(1, c.leaves, c.moved, nil); !errors.Is(err, ErrRelocate) {
			t.Fatalf("%s: %v, want ErrRelocate", c.name, err)
		}
		if tr.Dirty() != 0 {
			t.Fatalf("%s: refused relocation left %d dirty nodes", c.name, tr.Dirty())
		}
		refs := tr.SegRefs()
		if len(refs) != len(refs0) || refs[1] != refs0[1] || refs[10] != 0 {
			t.Fatalf("%s: counts changed: %v, were %v", c.name, refs, refs0)
		}
		for i, r := range all {
			sameModel(t, c.name, mapped(t, tr, r.Head), want[i])
		}
	}
}

// TestRelocateWatched: a walk and a relocation while the trees change.
// After the watch began: a volume whose leaf maps the victim is deleted
// and committed (its leaf is gone from Pebble: the watched walk skips it,
// an unwatched one fails); then a head copies the leaf it shares with a
// snapshot to overwrite one block, punches another, and a new volume maps
// three of the victim's records (copy_file_range). Relocate finds the new
// leaves through the watch, refuses with a NotMovedError while one record
// mapped since is not moved, then redirects exactly what each leaf maps
// now: the overwritten and punched blocks keep their new state.
func TestRelocateWatched(t *testing.T) {
	db, tr := openMem(t, vfs.NewMem())
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tr.Map(1, 0, 100, 1, 0))
	_, err := tr.CreateSnapshot(1, "s", 1)
	must(err)
	must(tr.Map(3, 600, 10, 1, 90))
	commit(t, db, tr)

	w, err := tr.Watch()
	must(err)
	defer w.Close()
	if _, err := tr.Watch(); !errors.Is(err, ErrWatching) {
		t.Fatalf("a second watch: %v", err)
	}
	roots, err := tr.Roots()
	must(err)
	must(tr.DeleteVolume(3))
	commit(t, db, tr)
	if _, err := tr.WalkLive(roots, 128); err == nil {
		t.Fatal("an unwatched walk read a node freed since its roots were listed")
	}
	start := w.Changes()
	l, err := tr.WalkLiveWatched(w, roots, 128)
	must(err)
	if w.Changes() != start || l.Count(1) != 100 {
		t.Fatalf("walk: changes %d -> %d, %d live in seg 1", start, w.Changes(), l.Count(1))
	}

	must(tr.Map(1, 5, 1, 2, 0)) // the head copies the leaf the snapshot keeps
	must(tr.Punch(1, 6, 1))
	must(tr.Map(2, 0, 3, 1, 10))
	if w.Changes() == start {
		t.Fatal("changes not counted")
	}
	moved := make([]Loc, 128)
	for _, idx := range l.Indexes(1) {
		moved[idx] = Loc{10, idx}
	}
	roots, err = tr.Roots()
	must(err)
	want := map[int]model{}
	for i, r := range roots {
		want[i] = mapped(t, tr, r.Head)
	}
	holey := append([]Loc(nil), moved...)
	holey[11] = Loc{}
	var nm *NotMovedError
	if _, err := tr.Relocate(1, l.Leaves(1), holey, w); !errors.As(err, &nm) || len(nm.Records) != 1 || nm.Records[0] != 11 ||
		!errors.Is(err, ErrRelocate) {
		t.Fatalf("relocation with record 11 not moved: %v", err)
	}
	if _, err := tr.Relocate(1, l.Leaves(1), moved, nil); !errors.Is(err, ErrRelocate) {
		t.Fatalf("relocation without the watch's leaves: %v", err)
	}
	for i, r := range roots {
		sameModel(t, "refused", mapped(t, tr, r.Head), want[i])
	}
	n, err := tr.Relocate(1, l.Leaves(1), moved, w)
	must(err)
	if n != 3 { // the snapshot's leaf, the head's copy, vol 2's
		t.Fatalf("%d leaves rewritten, want 3", n)
	}
	for i, r := range roots {
		exp := model{}
		for b, x := range want[i] {
			if x.seg == 1 {
				x = ref{10, x.idx}
			}
			exp[b] = x
		}
		sameModel(t, "relocated", mapped(t, tr, r.Head), exp)
	}
	if h := mapped(t, tr, roots[0].Head); h[5] != (ref{2, 0}) || h[6] != (ref{}) {
		t.Fatalf("head of vol 1: block 5 %+v, block 6 %+v", h[5], h[6])
	}
	if dead := commit(t, db, tr); len(dead) != 1 || dead[0] != 1 {
		t.Fatalf("dead after relocation: %v, want [1]", dead)
	}
	r, err := tr.Check(nil)
	must(err)
	if len(r.Problems) != 0 {
		t.Fatalf("check: %v", r.Problems)
	}
}
