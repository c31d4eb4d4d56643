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
	var done []string
	say := func(format string, args ...any) { done = append(done, fmt.Sprintf(format, args...)) }
	b := t.db.NewBatch()
	if !r.Damaged {
		for _, seg := range sortedKeys(r.StoredSegRefs) {
			if _, ok := r.SegRefs[seg]; !ok {
				b.SetSegRefs(seg, 0)
				say("segment %016x: count %d -> 0 (no tree references it)", seg, r.StoredSegRefs[seg])
			}
		}
		for _, seg := range sortedKeys(r.SegRefs) {
			if n, old := r.SegRefs[seg], r.StoredSegRefs[seg]; n != old {
				b.SetSegRefs(seg, n)
				say("segment %016x: count %d -> %d (what the trees hold)", seg, old, n)
			}
		}
		for _, id := range sortedKeys(r.nodeRefs) {
			old, ok := r.storedRefs[id]
			if !ok {
				old = 1
			}
			if n := r.nodeRefs[id]; n != old {
				b.setNodeRefs(id, n)
				say("node %d: count %d -> %d (parents and roots that point at it)", id, old, n)
			}
		}
		for _, id := range sortedKeys(r.storedRefs) {
			if r.nodeRefs[id] == 0 {
				b.b.Delete(key64(pfxRef, id), nil)
				say("node %d: count %d deleted (no root reaches the node)", id, r.storedRefs[id])
			}
		}
		for _, id := range r.leaked {
			b.b.Delete(key64(pfxNode, id), nil)
			say("node %d deleted: no root reaches it", id)
		}
	}
	t.db.mu.Lock()
	sb := &t.db.sb
	for _, c := range []struct {
		what  string
		field *uint64
		above uint64
	}{
		{"inode number", &sb.NextIno, r.InUse.Ino + 1},
		{"tree node id", &sb.NextNode, r.InUse.Node + 1},
		{"generation", &sb.NextGen, r.InUse.Gen + 1},
		{"snapshot id", &sb.NextSnap, r.InUse.Snap + 1},
		{"segment sequence", &sb.NextSeq, nextSeq},
	} {
		if *c.field < c.above {
			say("superblock: next %s %d -> %d", c.what, *c.field, c.above)
			*c.field = c.above
		}
	}
	t.db.mu.Unlock()
	if len(done) == 0 {
		b.Close()
	} else {
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
