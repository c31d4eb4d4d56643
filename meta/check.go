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
}

// Check walks every committed head from Pebble (not the cache) and
// verifies that the stored reference counts of nodes and segments are
// exactly what the trees reach, that no node is unreachable, and that each
// head's block count matches its tree. extent is called once per distinct
// leaf entry so the caller can verify the blocks. Call it on a database no
// mount is using.
func (t *Trees) Check(extent func(seg uint64, idx uint32, n uint64) error) (*CheckReport, error) {
	r := &CheckReport{}
	bad := func(format string, args ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, args...)) }
	refs := map[uint64]uint32{}
	segs := map[uint64]int64{}
	type item struct {
		id    uint64
		level int
	}
	var walk func(id uint64, level int) (uint64, error)
	counts := map[uint64]uint64{}
	walk = func(id uint64, level int) (uint64, error) {
		refs[id]++
		if refs[id] > 1 {
			return counts[id], nil
		}
		v, err := t.db.get(key64(pfxNode, id))
		if err != nil {
			bad("node %d is referenced but missing: %v", id, err)
			return 0, nil
		}
		n, err := decodeNode(id, v)
		if err != nil {
			bad("%v", err)
			return 0, nil
		}
		r.Nodes++
		if int(n.level) != level {
			bad("node %d has level %d, expected %d", id, n.level, level)
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
				got, err := walk(c.id, level-1)
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
	var heads []struct {
		vol uint64
		h   Head
	}
	var derr error
	err := t.db.scan([]byte{pfxHead}, func(k, v []byte) bool {
		var h Head
		if err := decodeVersioned(v, headVersion, &h); err != nil {
			derr = err
			return false
		}
		heads = append(heads, struct {
			vol uint64
			h   Head
		}{binary.BigEndian.Uint64(k[1:]), h})
		return true
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return nil, err
	}
	r.Heads = len(heads)
	// Snapshots are roots too: each holds one reference to its root.
	err = t.db.scan([]byte{pfxSnap}, func(k, v []byte) bool {
		var s Snapshot
		if err := decodeVersioned(v, snapVersion, &s); err != nil {
			derr = fmt.Errorf("snapshot %q of volume %d: %w", k[9:], binary.BigEndian.Uint64(k[1:9]), err)
			return false
		}
		r.Snapshots++
		heads = append(heads, struct {
			vol uint64
			h   Head
		}{binary.BigEndian.Uint64(k[1:9]), s.Head})
		return true
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return nil, err
	}
	gens := map[uint64]uint64{}
	for _, hd := range heads {
		if hd.h.Root == 0 {
			if hd.h.Blocks != 0 {
				bad("volume %d: empty tree but %d blocks", hd.vol, hd.h.Blocks)
			}
			continue
		}
		if other, ok := gens[hd.h.Gen]; ok {
			bad("roots of volumes %d and %d share generation %d", other, hd.vol, hd.h.Gen)
		}
		gens[hd.h.Gen] = hd.vol
		got, err := walk(hd.h.Root, int(hd.h.Height)-1)
		if err != nil {
			return nil, err
		}
		if got != hd.h.Blocks {
			bad("volume %d: head says %d blocks, tree has %d", hd.vol, hd.h.Blocks, got)
		}
	}
	// Stored node refcounts and unreachable nodes.
	t.db.scan([]byte{pfxNode}, func(k, v []byte) bool {
		id := binary.BigEndian.Uint64(k[1:])
		if refs[id] == 0 {
			bad("node %d is stored but unreachable (leaked)", id)
		}
		return true
	})
	stored := map[uint64]uint32{}
	t.db.scan([]byte{pfxRef}, func(k, v []byte) bool {
		if len(v) == 4 {
			stored[binary.BigEndian.Uint64(k[1:])] = binary.BigEndian.Uint32(v)
		}
		return true
	})
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
		delete(stored, id)
	}
	for id := range stored {
		bad("refcount stored for unreachable node %d", id)
	}
	// Segment reference counts.
	storedSegs := map[uint64]int64{}
	t.db.scan([]byte{pfxSegment}, func(k, v []byte) bool {
		n, _ := binary.Varint(v)
		storedSegs[binary.BigEndian.Uint64(k[1:])] = n
		return true
	})
	for seg, n := range segs {
		if storedSegs[seg] != n {
			bad("segment %016x: stored %d references, trees hold %d", seg, storedSegs[seg], n)
		}
		delete(storedSegs, seg)
	}
	for seg, n := range storedSegs {
		bad("segment %016x: stored %d references, no tree holds any", seg, n)
	}
	return r, nil
}
