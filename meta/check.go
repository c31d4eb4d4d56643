package meta

import (
	"encoding/binary"
	"fmt"
	"sort"
)

// CheckReport is what Check found.
type CheckReport struct {
	Heads     int
	Snapshots int
	Nodes     int    // reachable nodes
	Extents   int    // reachable leaf entries
	Blocks    uint64 // block references from reachable leaves
	Problems  []string

	// Damaged: a root reaches a node that is missing, undecodable or at
	// the wrong level. The walk then under-counts what the trees reach,
	// so nothing may be recounted or freed from it (Repair refuses).
	Damaged bool
	// Super is the superblock as stored.
	Super Superblock
	// SegRefs is, per segment, the block references the reachable leaves
	// hold: what its stored count ("g") must be.
	SegRefs map[uint64]int64
	// StoredSegRefs is the stored segment counts ("g").
	StoredSegRefs map[uint64]int64
	// InUse is the highest number of each kind the superblock hands out
	// that is in use.
	InUse InUse

	nodeRefs   map[uint64]uint32 // reachable node -> parents, heads and snapshots that point at it
	storedRefs map[uint64]uint32 // stored node counts ("c")
	leaked     []uint64          // nodes stored but unreachable
}

// InUse is the highest number in use of each counter of the superblock
// except the segment sequence, which only the caller can read from
// segment ids (0: none in use).
type InUse struct {
	Ino  uint64 // inodes, directory entries, xattrs, orphans (a head without an inode is dropped at mount)
	Node uint64 // nodes stored, reachable (even if missing) or counted
	Gen  uint64 // generations of heads, snapshots and stored nodes
	Snap uint64 // snapshot ids
}

// Check walks every committed head and snapshot from Pebble (not the
// cache) and verifies that the stored reference counts of nodes and
// segments are exactly what the trees reach, that no node is unreachable,
// that each head's block count matches its tree, and that every counter
// of the superblock is above every number in use. extent is called once
// per distinct leaf entry so the caller can verify the blocks. Check
// changes nothing: call it on a database no mount is using (read-only is
// fine).
func (t *Trees) Check(extent func(seg uint64, idx uint32, n uint64) error) (*CheckReport, error) {
	r := &CheckReport{Super: t.db.Super(), SegRefs: map[uint64]int64{}, StoredSegRefs: map[uint64]int64{},
		nodeRefs: map[uint64]uint32{}, storedRefs: map[uint64]uint32{}}
	bad := func(format string, args ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, args...)) }
	refs, segs := r.nodeRefs, r.SegRefs
	var walk func(id uint64, level int) (uint64, error)
	counts := map[uint64]uint64{}
	walk = func(id uint64, level int) (uint64, error) {
		refs[id]++
		r.InUse.Node = max(r.InUse.Node, id)
		if refs[id] > 1 {
			return counts[id], nil
		}
		v, err := t.db.get(key64(pfxNode, id))
		if err != nil {
			bad("node %d is referenced but missing: %v", id, err)
			r.Damaged = true
			return 0, nil
		}
		n, err := decodeNode(id, v)
		if err != nil {
			bad("%v", err)
			r.Damaged = true
			return 0, nil
		}
		r.Nodes++
		r.InUse.Gen = max(r.InUse.Gen, n.gen)
		if int(n.level) != level {
			bad("node %d has level %d, expected %d", id, n.level, level)
			r.Damaged = true
		}
		var total uint64
		if n.level == 0 {
			for _, e := range n.ext {
				r.Extents++
				r.Blocks += uint64(e.n)
				segs[e.seg] += int64(e.n)
				total += uint64(e.n)
				if extent != nil {
					if err := extent(e.seg, e.idx, uint64(e.n)); err != nil {
						bad("node %d slot %d: %v", id, e.slot, err)
					}
				}
			}
		} else {
			for _, c := range n.kids {
				got, err := walk(c.id, int(n.level)-1)
				if err != nil {
					return 0, err
				}
				if got != c.blocks {
					bad("node %d slot %d says %d blocks below, the subtree has %d", id, c.slot, c.blocks, got)
				}
				total += got
			}
		}
		counts[id] = total
		return total, nil
	}
	type root struct {
		vol  uint64
		snap string // "" for the head
		h    Head
	}
	var roots []root
	var derr error
	err := t.db.scan([]byte{pfxHead}, func(k, v []byte) bool {
		var h Head
		if err := decodeHead(v, &h); err != nil {
			derr = fmt.Errorf("head of volume %d: %w", binary.BigEndian.Uint64(k[1:]), err)
			return false
		}
		roots = append(roots, root{vol: binary.BigEndian.Uint64(k[1:]), h: h})
		return true
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return nil, err
	}
	r.Heads = len(roots)
	// Snapshots are roots too: each holds one reference to its root.
	err = t.db.scan([]byte{pfxSnap}, func(k, v []byte) bool {
		var s Snapshot
		if err := decodeVersioned(v, snapVersion, &s); err != nil {
			derr = fmt.Errorf("snapshot %q of volume %d: %w", k[9:], binary.BigEndian.Uint64(k[1:9]), err)
			return false
		}
		r.Snapshots++
		r.InUse.Snap = max(r.InUse.Snap, s.ID)
		roots = append(roots, root{vol: binary.BigEndian.Uint64(k[1:9]), snap: string(k[9:]), h: s.Head})
		return true
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return nil, err
	}
	gens := map[uint64]root{}
	for _, rt := range roots {
		what := fmt.Sprintf("volume %d", rt.vol)
		if rt.snap != "" {
			what = fmt.Sprintf("snapshot %q of volume %d", rt.snap, rt.vol)
		}
		r.InUse.Gen = max(r.InUse.Gen, rt.h.Gen)
		if rt.h.Root == 0 {
			if rt.h.Blocks != 0 {
				bad("%s: empty tree but %d blocks", what, rt.h.Blocks)
			}
			continue
		}
		if other, ok := gens[rt.h.Gen]; ok {
			bad("roots of volumes %d and %d share generation %d", other.vol, rt.vol, rt.h.Gen)
		}
		gens[rt.h.Gen] = rt
		got, err := walk(rt.h.Root, int(rt.h.Height)-1)
		if err != nil {
			return nil, err
		}
		if got != rt.h.Blocks {
			bad("%s: head says %d blocks, tree has %d", what, rt.h.Blocks, got)
		}
	}
	// Stored nodes that no root reaches.
	err = t.db.scan([]byte{pfxNode}, func(k, v []byte) bool {
		id := binary.BigEndian.Uint64(k[1:])
		r.InUse.Node = max(r.InUse.Node, id)
		if refs[id] == 0 {
			bad("node %d is stored but unreachable (leaked)", id)
			r.leaked = append(r.leaked, id)
			if n, err := decodeNode(id, v); err == nil {
				r.InUse.Gen = max(r.InUse.Gen, n.gen)
			}
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	stored := r.storedRefs
	err = t.db.scan([]byte{pfxRef}, func(k, v []byte) bool {
		id := binary.BigEndian.Uint64(k[1:])
		r.InUse.Node = max(r.InUse.Node, id)
		if len(v) == 4 {
			stored[id] = binary.BigEndian.Uint32(v)
		} else {
			bad("node %d: refcount of %d bytes", id, len(v))
			stored[id] = 0 // rewritten by Repair
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	ids := make([]uint64, 0, len(refs))
	for id := range refs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		want := uint32(1)
		if s, ok := stored[id]; ok {
			want = s
		}
		if want != refs[id] {
			bad("node %d: stored refcount %d, reachable from %d parents", id, want, refs[id])
		}
	}
	for _, id := range sortedKeys(stored) {
		if refs[id] == 0 {
			bad("refcount stored for unreachable node %d", id)
		}
	}
	// Segment reference counts.
	err = t.db.scan([]byte{pfxSegment}, func(k, v []byte) bool {
		n, sz := binary.Varint(v)
		if sz <= 0 {
			bad("segment %016x: undecodable count %x", binary.BigEndian.Uint64(k[1:]), v)
		}
		r.StoredSegRefs[binary.BigEndian.Uint64(k[1:])] = n
		return true
	})
	if err != nil {
		return nil, err
	}
	for _, seg := range sortedKeys(segs) {
		if n := segs[seg]; r.StoredSegRefs[seg] != n {
			bad("segment %016x: stored %d references, trees hold %d", seg, r.StoredSegRefs[seg], n)
		}
	}
	for _, seg := range sortedKeys(r.StoredSegRefs) {
		if _, ok := segs[seg]; !ok {
			bad("segment %016x: stored %d references, no tree holds any", seg, r.StoredSegRefs[seg])
		}
	}
	if err := t.inodesInUse(&r.InUse); err != nil {
		return nil, err
	}
	r.checkCounters(bad)
	return r, nil
}

// inodesInUse raises u.Ino to every inode number a key or a directory
// entry names.
func (t *Trees) inodesInUse(u *InUse) error {
	for _, p := range []byte{pfxInode, pfxXattr, pfxOrphan, pfxDirent} {
		var derr error
		err := t.db.scan([]byte{p}, func(k, v []byte) bool {
			if len(k) < 9 {
				return true
			}
			u.Ino = max(u.Ino, binary.BigEndian.Uint64(k[1:9]))
			if p == pfxDirent {
				e, err := decodeDirent(v)
				if err != nil {
					derr = fmt.Errorf("directory entry %q of %d: %w", k[9:], binary.BigEndian.Uint64(k[1:9]), err)
					return false
				}
				u.Ino = max(u.Ino, e.Ino)
			}
			return true
		})
		if err == nil {
			err = derr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkCounters: each counter is the next number to hand out, so it must
// be above every number in use, or a create after the next mount would
// reuse one (two names on one inode, a new node over a live one).
func (r *CheckReport) checkCounters(bad func(string, ...any)) {
	sb := r.Super
	for _, c := range []struct {
		what       string
		next, used uint64
	}{
		{"inode number", sb.NextIno, r.InUse.Ino},
		{"tree node id", sb.NextNode, r.InUse.Node},
		{"generation", sb.NextGen, r.InUse.Gen},
		{"snapshot id", sb.NextSnap, r.InUse.Snap},
	} {
		if c.used != 0 && c.next <= c.used {
			bad("superblock: next %s %d is not above %d, which is in use", c.what, c.next, c.used)
		}
	}
}

func sortedKeys[V any](m map[uint64]V) []uint64 {
	out := make([]uint64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
