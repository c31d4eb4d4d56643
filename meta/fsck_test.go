package meta

import (
	"errors"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/vfs"
)

// fsckLayout: volume 1 maps 5000 blocks of segment 9 (several leaves and an
// internal node), snapshot "s" freezes it, then volume 1 overwrites 10
// blocks with segment 10; volume 2 is a clone of the snapshot's tree.
func fsckLayout(t *testing.T) (vfs.FS, *DB, *Trees) {
	t.Helper()
	mem := vfs.NewMem()
	db, tr := openMem(t, mem)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tr.Map(1, 0, 5000, 9, 0))
	_, err := tr.CreateSnapshot(1, "s", 1)
	must(err)
	must(tr.Map(1, 600, 10, 10, 0))
	must(tr.Clone(1, 2, 1))
	commit(t, db, tr)
	return mem, db, tr
}

func mustClean(t *testing.T, tr *Trees) *CheckReport {
	t.Helper()
	r, err := tr.Check(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 0 || r.Damaged {
		t.Fatalf("check: damaged %v, problems:\n  %s", r.Damaged, strings.Join(r.Problems, "\n  "))
	}
	return r
}

func hasProblem(r *CheckReport, sub string) bool {
	for _, p := range r.Problems {
		if strings.Contains(p, sub) {
			return true
		}
	}
	return false
}

// TestCheckCountersInUse: every counter of the superblock must be above
// every number in use; Check names each one that is not, and Repair raises
// it (and the segment sequence to what the caller asks).
func TestCheckCountersInUse(t *testing.T) {
	_, db, tr := fsckLayout(t)
	b := db.NewBatch()
	ino := b.AllocIno()
	b.PutInode(ino, &Inode{Mode: 0o100644, Nlink: 1})
	b.PutDirent(RootIno, "f", Dirent{Ino: ino, Type: 0o100000})
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	r := mustClean(t, tr)
	if r.InUse.Ino != ino || r.InUse.Snap != 1 || r.InUse.Node == 0 || r.InUse.Gen == 0 {
		t.Fatalf("in use: %+v", r.InUse)
	}
	good := db.Super()
	// Counters moved back, as a commit's older superblock once did.
	db.mu.Lock()
	db.sb.NextIno, db.sb.NextNode, db.sb.NextGen, db.sb.NextSnap, db.sb.NextSeq = ino, 1, 2, 1, 1
	db.mu.Unlock()
	b = db.NewBatch()
	b.PutSuper()
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	r, err := tr.Check(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, what := range []string{"next inode number", "next tree node id", "next generation", "next snapshot id"} {
		if !hasProblem(r, what) {
			t.Errorf("check missed the %s moved back; problems: %v", what, r.Problems)
		}
	}
	done, err := tr.Repair(r, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 5 {
		t.Errorf("repair: %d changes, want the 5 counters raised:\n  %s", len(done), strings.Join(done, "\n  "))
	}
	r = mustClean(t, tr)
	sb := r.Super
	if sb.NextIno != ino+1 || sb.NextNode != good.NextNode || sb.NextGen != good.NextGen || sb.NextSnap != 2 || sb.NextSeq != 7 {
		t.Fatalf("after repair %+v, before the damage %+v", sb, good)
	}
}

// TestRepairCounts: a lost segment count, a wrong node count, a count for
// a segment no tree references and a leaked node are reported and
// rewritten to what the walk found; afterwards Check is clean.
func TestRepairCounts(t *testing.T) {
	mem, db, tr := fsckLayout(t)
	r := mustClean(t, tr)
	if r.SegRefs[9] == 0 || r.SegRefs[10] != 10 {
		t.Fatalf("walk: %v", r.SegRefs)
	}
	var root uint64
	if h, err := tr.Head(2); err != nil {
		t.Fatal(err)
	} else {
		root = h.Root
	}
	b := db.NewBatch()
	b.SetSegRefs(9, 0)     // lost
	b.SetSegRefs(77, 5)    // no tree references segment 77
	b.setNodeRefs(root, 1) // shared by volume 2 and the snapshot: 2
	b.b.Set(key64(pfxNode, 1<<40), encodeNode(&node{id: 1 << 40, level: 0, gen: 1}), nil)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, tr = openMem(t, mem)
	r, err := tr.Check(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"segment 0000000000000009: stored 0 references", "segment 000000000000004d: stored 5 references, no tree",
		"stored refcount 1, reachable from 2", "unreachable (leaked)", "next tree node id"} {
		if !hasProblem(r, p) {
			t.Errorf("check missed %q; problems:\n  %s", p, strings.Join(r.Problems, "\n  "))
		}
	}
	done, err := tr.Repair(r, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("repair:\n  %s", strings.Join(done, "\n  "))
	if len(done) != 5 {
		t.Errorf("%d changes, want 5 (two segment counts, a node count, a leaked node, the node counter)", len(done))
	}
	db.Close()
	_, tr = openMem(t, mem)
	mustClean(t, tr)
	if got := tr.SegRefs(); got[9] != r.SegRefs[9] || got[77] != 0 {
		t.Fatalf("after repair, stored counts %v", got)
	}
}

// TestRepairRefusesDamaged: with a node missing the walk under-counts, so
// Repair must not rewrite any count from it.
func TestRepairRefusesDamaged(t *testing.T) {
	_, db, tr := fsckLayout(t)
	h, err := tr.Head(1)
	if err != nil {
		t.Fatal(err)
	}
	n, err := tr.load(h.Root)
	if err != nil || len(n.kids) == 0 {
		t.Fatalf("root %d: %v", h.Root, err)
	}
	b := db.NewBatch()
	b.b.Delete(key64(pfxNode, n.kids[0].id), nil)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	before := tr.SegRefs()
	r, err := tr.Check(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Damaged || !hasProblem(r, "referenced but missing") {
		t.Fatalf("damaged %v, problems %v", r.Damaged, r.Problems)
	}
	done, err := tr.Repair(r, 0)
	if !errors.Is(err, ErrDamaged) || len(done) != 0 {
		t.Fatalf("repair of damaged trees: %v, changes %v", err, done)
	}
	tr2, err := OpenTrees(db)
	if err != nil {
		t.Fatal(err)
	}
	if after := tr2.SegRefs(); after[9] != before[9] || after[10] != before[10] {
		t.Fatalf("counts changed: %v -> %v", before, after)
	}
}

// TestSegmentRefs: the mount's walk counts what the stored counts say, for
// the segments asked about only, and refuses a root it cannot walk.
func TestSegmentRefs(t *testing.T) {
	_, _, tr := fsckLayout(t)
	roots, err := tr.Roots()
	if err != nil {
		t.Fatal(err)
	}
	got, err := tr.SegmentRefs(roots, map[uint64]bool{10: true, 11: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[10] != tr.SegRefs()[10] {
		t.Fatalf("refs %v, stored %v", got, tr.SegRefs())
	}
	bad := append(roots, Root{Vol: 9, Head: Head{Root: 12345, Height: 2}})
	if _, err := tr.SegmentRefs(bad, map[uint64]bool{10: true}); err == nil {
		t.Fatal("a root whose node is missing walked without error")
	}
}
