package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// What fsck --repair and the mount's sweep change (fs/check.go, fs's
// sweep): counts are only ever rewritten to what a walk of every committed
// tree found, never to a guess.

// ErrDamaged: a tree is damaged (a node missing or undecodable), so a walk
// under-counts and nothing may be recounted or freed from it.
var ErrDamaged = errors.New("meta: trees are damaged")

// SetSegRefs writes the stored count of seg ("g"); 0 deletes it.
func (b *Batch) SetSegRefs(seg uint64, n int64) {
	if n == 0 {
		b.b.Delete(key64(pfxSegment, seg), nil)
		return
	}
	b.b.Set(key64(pfxSegment, seg), binary.AppendVarint(nil, n), nil)
}

// setNodeRefs writes the stored count of a node ("c"); 1 is the absent key.
func (b *Batch) setNodeRefs(id uint64, n uint32) {
	if n == 1 {
		b.b.Delete(key64(pfxRef, id), nil)
		return
	}
	var v [4]byte
	binary.BigEndian.PutUint32(v[:], n)
	b.b.Set(key64(pfxRef, id), v[:], nil)
}

// RestoreSegRefs sets the live count of seg to n, what a walk of every
// committed tree found, for the next commit to write. The mount calls it
// for a segment that has no stored count although trees reference it (a
// lost "g" key): with count 0 the next overwrite of one of its blocks
// would drive the count negative, and a sweep would delete the segment.
// Nothing may change the trees between the walk and this call.
func (t *Trees) RestoreSegRefs(seg uint64, n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.segs[seg] = n
	t.dirtySegs[seg] = true
}

// fix is one change Repair makes: a line that says it, and the change.
type fix struct {
	line  string
	apply func(b *Batch, sb *Superblock)
}

// fixes lists what Repair changes (see there), in a stable order.
func (r *CheckReport) fixes(nextSeq uint64) []fix {
	var out []fix
	add := func(apply func(*Batch, *Superblock), format string, args ...any) {
		out = append(out, fix{fmt.Sprintf(format, args...), apply})
	}
	if !r.Damaged {
		for _, seg := range sortedKeys(r.StoredSegRefs) {
			if _, ok := r.SegRefs[seg]; !ok {
				add(func(b *Batch, _ *Superblock) { b.SetSegRefs(seg, 0) },
					"segment %016x: count %d -> 0 (no tree references it)", seg, r.StoredSegRefs[seg])
			}
		}
		for _, seg := range sortedKeys(r.SegRefs) {
			if n, old := r.SegRefs[seg], r.StoredSegRefs[seg]; n != old {
				add(func(b *Batch, _ *Superblock) { b.SetSegRefs(seg, n) },
					"segment %016x: count %d -> %d (what the trees hold)", seg, old, n)
			}
		}
		for _, id := range sortedKeys(r.nodeRefs) {
			old, ok := r.storedRefs[id]
			if !ok {
				old = 1
			}
			if n := r.nodeRefs[id]; n != old {
				add(func(b *Batch, _ *Superblock) { b.setNodeRefs(id, n) },
					"node %d: count %d -> %d (the parents and roots that point at it)", id, old, n)
			}
		}
		for _, id := range sortedKeys(r.storedRefs) {
			if r.nodeRefs[id] == 0 {
				add(func(b *Batch, _ *Superblock) { b.b.Delete(key64(pfxRef, id), nil) },
					"node %d: count %d deleted (no root reaches the node)", id, r.storedRefs[id])
			}
		}
		for _, id := range r.leaked {
			add(func(b *Batch, _ *Superblock) { b.b.Delete(key64(pfxNode, id), nil) },
				"node %d deleted: no root reaches it", id)
		}
	}
	sb := r.Super
	for _, c := range []struct {
		what  string
		field func(*Superblock) *uint64
		above uint64
	}{
		{"inode number", func(s *Superblock) *uint64 { return &s.NextIno }, r.InUse.Ino + 1},
		{"tree node id", func(s *Superblock) *uint64 { return &s.NextNode }, r.InUse.Node + 1},
		{"generation", func(s *Superblock) *uint64 { return &s.NextGen }, r.InUse.Gen + 1},
		{"snapshot id", func(s *Superblock) *uint64 { return &s.NextSnap }, r.InUse.Snap + 1},
		{"segment sequence", func(s *Superblock) *uint64 { return &s.NextSeq }, nextSeq},
	} {
		if cur := *c.field(&sb); cur < c.above {
			add(func(_ *Batch, s *Superblock) { f := c.field(s); *f = max(*f, c.above) },
				"superblock: next %s %d -> %d", c.what, cur, c.above)
		}
	}
	return out
}

// RepairPlan lists, one line per change, what Repair(r, nextSeq) would
// change; it changes nothing.
func (r *CheckReport) RepairPlan(nextSeq uint64) []string {
	fs := r.fixes(nextSeq)
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.line
	}
	return out
}

// Repair makes the counts and counters of the database what r, a Check of
// this same database with nothing changed since, says they must be, in one
// synced batch, and returns one line per change:
//   - every segment count ("g") and node count ("c") that differs from what
//     the walk found is rewritten to it;
//   - nodes no root reaches, and their counts, are deleted;
//   - every superblock counter below a number in use is raised above it, and
//     the segment sequence to at least nextSeq (the caller reads segment ids).
//
// When r.Damaged, counts and nodes are left alone (the walk under-counted)
// and only counters are raised; the error then wraps ErrDamaged. Heads'
// block counts are not rewritten.
func (t *Trees) Repair(r *CheckReport, nextSeq uint64) ([]string, error) {
	fs := r.fixes(nextSeq)
	var done []string
	if len(fs) > 0 {
		b := t.db.NewBatch()
		t.db.mu.Lock() // counters only grow: a fix raises, never lowers
		for _, f := range fs {
			f.apply(b, &t.db.sb)
			done = append(done, f.line)
		}
		t.db.mu.Unlock()
		b.PutSuper()
		if err := b.Commit(true); err != nil {
			return nil, err
		}
	}
	if r.Damaged {
		return done, fmt.Errorf("%w: counts not rewritten, nodes not deleted", ErrDamaged)
	}
	return done, nil
}
