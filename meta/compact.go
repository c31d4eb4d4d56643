package meta

import (
	"errors"
	"fmt"
)

// Compaction (docs/compaction.md): the live records of a mostly-dead
// segment are copied elsewhere by the caller, then Relocate points every
// leaf that maps them at the copies. A move does not change what any tree
// reads, so a leaf is rewritten in place even when it is shared by several
// heads and snapshots; the rewritten leaves, the moved segment counts and
// the victim's count of 0 reach Pebble in the caller's next commit.

// ErrRelocate: a relocation was refused and nothing was changed.
var ErrRelocate = errors.New("meta: relocation refused")

// Loc is the place of a record.
type Loc struct {
	Seg uint64
	Idx uint32
}

// Relocate points the leaves (those a WalkLive found for victim) at the new
// places of victim's records: record idx is now at moved[idx]. It checks
// everything before it changes anything: each id is a leaf, each record of
// victim that a leaf maps was moved, and the leaves map exactly as many
// blocks into victim as victim's stored reference count — so that
// afterwards no tree references victim. A failed check returns
// ErrRelocate and changes nothing. It returns the number of leaves
// rewritten.
//
// The caller keeps the trees from changing between the walk and this call
// (fs holds its state lock), so leaves is complete for the walked roots.
func (t *Trees) Relocate(victim uint64, leaves []uint64, moved []Loc) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	nodes := make([]*node, 0, len(leaves))
	seen := map[uint64]bool{}
	var refs int64
	for _, id := range leaves {
		if seen[id] {
			continue
		}
		seen[id] = true
		n, err := t.load(id)
		if err != nil {
			return 0, err
		}
		if n.level != 0 {
			return 0, fmt.Errorf("%w: node %d is not a leaf", ErrRelocate, id)
		}
		for _, e := range n.ext {
			if e.seg != victim {
				continue
			}
			for i := uint32(0); i < uint32(e.n); i++ {
				if x := e.idx + i; int(x) >= len(moved) || moved[x].Seg == 0 || moved[x].Seg == victim {
					return 0, fmt.Errorf("%w: segment %016x record %d is mapped by node %d but was not moved",
						ErrRelocate, victim, x, id)
				}
			}
			refs += int64(e.n)
		}
		nodes = append(nodes, n)
	}
	if stored := t.segs[victim]; stored != refs {
		return 0, fmt.Errorf("%w: segment %016x: stored count %d, the walked leaves map %d blocks into it",
			ErrRelocate, victim, stored, refs)
	}
	rewritten := 0
	for _, n := range nodes {
		out := make([]extent, 0, len(n.ext)+4)
		put := func(e extent) {
			if k := len(out) - 1; k >= 0 {
				if p := out[k]; p.slot+p.n == e.slot && p.seg == e.seg && p.idx+uint32(p.n) == e.idx {
					out[k].n += e.n
					return
				}
			}
			out = append(out, e)
		}
		changed := false
		for _, e := range n.ext {
			if e.seg != victim {
				put(e)
				continue
			}
			changed = true
			t.segAdd(victim, -int64(e.n))
			var run extent
			for i := uint16(0); i < e.n; i++ {
				l := moved[e.idx+uint32(i)]
				if run.n > 0 && l.Seg == run.seg && l.Idx == run.idx+uint32(run.n) {
					run.n++
					continue
				}
				if run.n > 0 {
					t.segAdd(run.seg, int64(run.n))
					put(run)
				}
				run = extent{slot: e.slot + i, n: 1, seg: l.Seg, idx: l.Idx}
			}
			t.segAdd(run.seg, int64(run.n))
			put(run)
		}
		if changed {
			n.ext = out
			t.markDirty(n)
			rewritten++
		}
	}
	if t.segs[victim] != 0 {
		// Cannot happen after the checks above.
		panic(fmt.Sprintf("meta: segment %016x has %d references after relocation", victim, t.segs[victim]))
	}
	return rewritten, nil
}
