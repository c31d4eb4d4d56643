package meta

import (
	"fmt"
	"math/bits"
	"sort"
)

// Live is the set of segment records that a set of trees reaches: per
// segment a bitmap of record indexes. Segment reference counts (key "g")
// count one per leaf extent block, so a record that several leaves map is
// counted several times there; Live holds each record once, which is what
// space accounting and compaction need.
type Live struct {
	words  int                 // bitmap words per segment at first
	bits   map[uint64][]uint64 // segment -> bitmap of live record indexes
	refs   map[uint64]int64    // segment -> blocks mapped by distinct reachable leaves
	leaves map[uint64][]uint64 // segment -> distinct reachable leaves that map into it
	Nodes  int                 // distinct nodes visited
}

func newLive(segBlocks uint32) *Live {
	return &Live{words: int((segBlocks + 63) / 64), bits: map[uint64][]uint64{},
		refs: map[uint64]int64{}, leaves: map[uint64][]uint64{}}
}

func (l *Live) mark(seg uint64, idx uint32, n uint64) {
	b := l.bits[seg]
	if need := int((uint64(idx) + n + 63) / 64); need > len(b) {
		// A segment written by a mount with larger segments: grow.
		b = append(b, make([]uint64, max(need, l.words)-len(b))...)
		l.bits[seg] = b
	}
	for i := uint64(idx); i < uint64(idx)+n; i++ {
		b[i/64] |= 1 << (i % 64)
	}
}

// Has reports whether record idx of seg is live.
func (l *Live) Has(seg uint64, idx uint32) bool {
	b := l.bits[seg]
	return int(idx/64) < len(b) && b[idx/64]&(1<<(idx%64)) != 0
}

// Count is the number of live records of seg.
func (l *Live) Count(seg uint64) uint64 {
	var n int
	for _, w := range l.bits[seg] {
		n += bits.OnesCount64(w)
	}
	return uint64(n)
}

// Total is the number of distinct live records.
func (l *Live) Total() uint64 {
	var n uint64
	for seg := range l.bits {
		n += l.Count(seg)
	}
	return n
}

// Segments lists the segments with live records, in order.
func (l *Live) Segments() []uint64 {
	out := make([]uint64, 0, len(l.bits))
	for seg := range l.bits {
		out = append(out, seg)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Indexes lists the live record indexes of seg in ascending order.
func (l *Live) Indexes(seg uint64) []uint32 {
	var out []uint32
	for wi, w := range l.bits[seg] {
		for w != 0 {
			b := bits.TrailingZeros64(w)
			out = append(out, uint32(wi*64+b))
			w &= w - 1
		}
	}
	return out
}

// Refs is what the stored reference count of seg must be if the walked
// roots are all the roots: the blocks that distinct reachable leaves map
// into seg.
func (l *Live) Refs(seg uint64) int64 { return l.refs[seg] }

// Leaves lists the distinct reachable leaves that map blocks into seg.
func (l *Live) Leaves(seg uint64) []uint64 { return l.leaves[seg] }

// WalkLive marks every record that the trees of roots reach, visiting each
// node once however many roots (or parents) share it. segBlocks is the
// records per segment (the bitmaps grow for a segment that holds more).
//
// The caller keeps the trees from changing for the duration (fs holds its
// state lock exclusively, which excludes writes and commits); the tree
// lock is taken per node, so lookups go on meanwhile.
func (t *Trees) WalkLive(roots []Root, segBlocks uint32) (*Live, error) {
	return t.WalkLiveWatched(nil, roots, segBlocks)
}

// WalkLiveWatched is WalkLive while the trees change, with a Watch started
// before roots were listed: a node freed since (its parent was read before
// it went) is skipped instead of read. The result is not one state of the
// trees: it may hold records dead by now and miss leaves created since,
// which the watch has (see Watch and Relocate).
func (t *Trees) WalkLiveWatched(w *Watch, roots []Root, segBlocks uint32) (*Live, error) {
	l := newLive(segBlocks)
	seen := map[uint64]bool{}
	for _, r := range roots {
		if r.Head.Root == 0 || r.Head.Height == 0 {
			continue
		}
		err := t.visit(w, r.Head.Root, int(r.Head.Height)-1, seen, func(id uint64, ext []extent) {
			last := uint64(0)
			for _, e := range ext {
				l.mark(e.seg, e.idx, uint64(e.n))
				l.refs[e.seg] += int64(e.n)
				if e.seg != last {
					if ls := l.leaves[e.seg]; len(ls) == 0 || ls[len(ls)-1] != id {
						l.leaves[e.seg] = append(ls, id)
					}
					last = e.seg
				}
			}
		})
		if err != nil {
			return nil, fmt.Errorf("walk volume %d snapshot %d: %w", r.Vol, r.Snap, err)
		}
	}
	l.Nodes = len(seen)
	return l, nil
}

// WalkMapped calls fn for every mapped run of one tree, in block order,
// with node loads under the tree lock (the same rule as WalkLive: the
// caller keeps the tree from changing).
func (t *Trees) WalkMapped(h Head, fn func(Mapping)) error {
	if h.Root == 0 || h.Height == 0 {
		return nil
	}
	return t.visitMapped(h.Root, int(h.Height)-1, 0, fn)
}

func (t *Trees) visitMapped(id uint64, level int, base uint64, fn func(Mapping)) error {
	t.mu.Lock()
	n, err := t.loadAt(id, level)
	if err != nil {
		t.mu.Unlock()
		return err
	}
	if level == 0 {
		ms := make([]Mapping, len(n.ext))
		for i, e := range n.ext {
			ms[i] = Mapping{Block: base + uint64(e.slot), N: uint64(e.n), Seg: e.seg, Idx: e.idx}
		}
		t.mu.Unlock()
		for _, m := range ms {
			fn(m)
		}
		return nil
	}
	kids := append([]child(nil), n.kids...)
	t.mu.Unlock()
	csp := span(level - 1)
	for _, c := range kids {
		if err := t.visitMapped(c.id, level-1, base+uint64(c.slot)*csp, fn); err != nil {
			return err
		}
	}
	return nil
}

// loadAt loads node id, which its parent puts at level. Caller holds t.mu.
func (t *Trees) loadAt(id uint64, level int) (*node, error) {
	n, err := t.load(id)
	if err == nil && int(n.level) != level {
		err = fmt.Errorf("%w: node %d has level %d, expected %d", ErrCorrupt, id, n.level, level)
	}
	return n, err
}

// visit calls leaf for every leaf below id that seen does not hold yet
// (marking every node it enters), with the tree lock held: leaf must not
// call back into t. A node that w saw freed is skipped.
func (t *Trees) visit(w *Watch, id uint64, level int, seen map[uint64]bool, leaf func(id uint64, ext []extent)) error {
	if seen[id] {
		return nil
	}
	seen[id] = true
	t.mu.Lock()
	if w != nil && w.freed[id] {
		t.mu.Unlock()
		return nil
	}
	n, err := t.loadAt(id, level)
	if err != nil {
		t.mu.Unlock()
		return err
	}
	if level == 0 {
		leaf(id, n.ext)
		t.mu.Unlock()
		return nil
	}
	kids := make([]uint64, 0, len(n.kids))
	for _, c := range n.kids {
		if !seen[c.id] {
			kids = append(kids, c.id)
		}
	}
	t.mu.Unlock()
	for _, k := range kids {
		if err := t.visit(w, k, level-1, seen, leaf); err != nil {
			return err
		}
	}
	return nil
}

// RegularFiles counts the inodes of regular files (including files
// unlinked while open, whose volumes still hold space).
func (d *DB) RegularFiles() (int, error) {
	var n int
	var derr error
	err := d.scan([]byte{pfxInode}, func(k, v []byte) bool {
		var in Inode
		if err := decodeVersioned(v, inodeVersion, &in); err != nil {
			derr = err
			return false
		}
		if in.Mode&0o170000 == 0o100000 {
			n++
		}
		return true
	})
	if err == nil {
		err = derr
	}
	return n, err
}

// SnapshotCount is the number of snapshots (empty ones included, which
// Roots leaves out).
func (t *Trees) SnapshotCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.snapByID)
}

// SegmentRefs returns, for each segment in segs, the block references
// that the leaves the trees of roots reach hold into it (what its stored
// count must be; absent: none), visiting each node once. The mount uses
// it to decide which segments without a live count are really
// unreferenced; the same rule as WalkLive holds: the caller keeps the
// trees from changing.
func (t *Trees) SegmentRefs(roots []Root, segs map[uint64]bool) (map[uint64]int64, error) {
	out := map[uint64]int64{}
	seen := map[uint64]bool{}
	for _, r := range roots {
		if r.Head.Root == 0 {
			continue
		}
		if r.Head.Height == 0 {
			// Not skipped as empty: a walk that misses a tree would free its blocks.
			return nil, fmt.Errorf("%w: volume %d snapshot %d: root %d at height 0", ErrCorrupt, r.Vol, r.Snap, r.Head.Root)
		}
		err := t.visit(nil, r.Head.Root, int(r.Head.Height)-1, seen, func(id uint64, ext []extent) {
			for _, e := range ext {
				if segs[e.seg] {
					out[e.seg] += int64(e.n)
				}
			}
		})
		if err != nil {
			return nil, fmt.Errorf("walk volume %d snapshot %d: %w", r.Vol, r.Snap, err)
		}
	}
	return out, nil
}
