package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
)

const headVersion = 1

// Head is the state of a volume that is committed with its data: the root
// of its mapping tree and what is derived from it.
type Head struct {
	Root   uint64 `msgpack:"r"`
	Height uint8  `msgpack:"h"` // levels; the root is at level Height-1; 0 when empty
	Gen    uint64 `msgpack:"g"` // nodes with this gen are owned by this head
	Size   uint64 `msgpack:"s"`
	Blocks uint64 `msgpack:"b"` // mapped blocks
	Mtime  int64  `msgpack:"m"`
	Ctime  int64  `msgpack:"c"`
}

// Mapping is a run of N blocks from Block on. Seg == 0 is a hole; otherwise
// the blocks are records Idx..Idx+N-1 of segment Seg. (Segment ids are
// never 0.)
type Mapping struct {
	Block uint64
	N     uint64
	Seg   uint64
	Idx   uint32
}

// MaxBlocks bounds block numbers: 2^40 blocks of 4 KiB is 4 PiB.
const MaxBlocks = 1 << 40

func span(level int) uint64 { return 1 << (FanoutBits * uint(level+1)) }

func heightFor(block uint64) uint8 {
	h := uint8(1)
	for span(int(h)-1) <= block {
		h++
	}
	return h
}

// Trees holds every volume's mapping tree. State changes are kept in
// memory until Flush writes them into a commit batch; a crash returns to
// the last committed state.
//
// Reference counting is Rodeh-style and lazy: a node's count is the number
// of parents (or heads and snapshots) that point at it, stored under "c"
// only when it is not 1. Copying a shared node adds a reference to each of
// its children (or, for a leaf, to each block, counted per segment).
type Trees struct {
	db *DB
	// mu guards everything below. Reads of a volume's blocks (Head,
	// Lookup) take it shared: every VM's reads pass through it, and an
	// exclusive lock, however briefly held, queued them behind one
	// another (with more runnable threads than CPUs, a holder preempted
	// or a waiter handed the lock but not yet running stalls them all).
	// No Pebble read happens under it on those paths.
	mu sync.RWMutex

	nodes map[uint64]*node // cache; dirty nodes are pinned here
	rc    map[uint64]uint32
	heads map[uint64]*Head
	segs  map[uint64]int64 // live block references per segment

	snaps    map[uint64]map[string]*Snapshot // every snapshot, by volume and name
	snapByID map[uint64]*Snapshot

	dirtyNodes map[uint64]*node
	freed      map[uint64]bool
	dirtyRC    map[uint64]bool
	dirtyHeads map[uint64]bool
	dropHeads  map[uint64]bool
	dirtySegs  map[uint64]bool
	dirtySnaps map[snapKey]bool // created or deleted since the last flush
	// changed lists the volumes whose head or tree changed since the last
	// flush in more than their times; pending counts flushes of each whose
	// batch has not landed yet (Landed, Unflush). See Settled.
	changed map[uint64]bool
	pending map[uint64]int

	// CacheNodes bounds the clean nodes kept after a flush.
	CacheNodes int

	fetched map[uint64]*node // nodes lookupRetry read for its walk but may not cache (freed ones; under mu)

	walkHook func(vol uint64) // tests: called in a shared-lock walk of vol (lookupRetry), under mu.RLock

	watch *Watch // a compaction pass's record of changes (meta/compact.go; under mu)
}

// OpenTrees loads the segment reference counts and prepares the tree cache.
func OpenTrees(db *DB) (*Trees, error) {
	t := &Trees{db: db, nodes: map[uint64]*node{}, rc: map[uint64]uint32{}, heads: map[uint64]*Head{},
		segs: map[uint64]int64{}, snaps: map[uint64]map[string]*Snapshot{}, snapByID: map[uint64]*Snapshot{},
		CacheNodes: 1 << 18, pending: map[uint64]int{}}
	t.resetDirty()
	if err := t.loadSnapshots(); err != nil {
		return nil, err
	}
	var derr error
	err := db.scan([]byte{pfxSegment}, func(k, v []byte) bool {
		n, sz := binary.Varint(v)
		if sz <= 0 {
			derr = fmt.Errorf("%w: segment refs", ErrCorrupt)
			return false
		}
		t.segs[binary.BigEndian.Uint64(k[1:])] = n
		return true
	})
	if err == nil {
		err = derr
	}
	return t, err
}

func (t *Trees) resetDirty() {
	t.dirtyNodes = map[uint64]*node{}
	t.freed = map[uint64]bool{}
	t.dirtyRC = map[uint64]bool{}
	t.dirtyHeads = map[uint64]bool{}
	t.dropHeads = map[uint64]bool{}
	t.dirtySegs = map[uint64]bool{}
	t.dirtySnaps = map[snapKey]bool{}
	t.changed = map[uint64]bool{}
}

// ---- loading ----

func (t *Trees) load(id uint64) (*node, error) {
	if n := t.nodes[id]; n != nil {
		return n, nil
	}
	if n := t.fetched[id]; n != nil {
		return n, nil
	}
	v, err := t.db.get(key64(pfxNode, id))
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: node %d is referenced but missing", ErrCorrupt, id)
	}
	if err != nil {
		return nil, err
	}
	n, err := decodeNode(id, v)
	if err != nil {
		return nil, err
	}
	t.nodes[id] = n
	return n, nil
}

// cached is load for a walk under mu.RLock: it reads only the cache and
// fails with *missError for a node not in it (lookupRetry reads that one
// from Pebble without the lock).
func (t *Trees) cached(id uint64) (*node, error) {
	if n := t.nodes[id]; n != nil {
		return n, nil
	}
	if n := t.fetched[id]; n != nil {
		return n, nil
	}
	return nil, &missError{id}
}

func (t *Trees) getRC(id uint64) (uint32, error) {
	if v, ok := t.rc[id]; ok {
		return v, nil
	}
	v, err := t.db.get(key64(pfxRef, id))
	if errors.Is(err, ErrNotFound) {
		t.rc[id] = 1
		return 1, nil
	}
	if err != nil {
		return 0, err
	}
	if len(v) != 4 {
		return 0, fmt.Errorf("%w: refcount of node %d", ErrCorrupt, id)
	}
	r := binary.BigEndian.Uint32(v)
	t.rc[id] = r
	return r, nil
}

func (t *Trees) setRC(id uint64, v uint32) {
	t.rc[id] = v
	t.dirtyRC[id] = true
}

func (t *Trees) incRef(id uint64) error {
	r, err := t.getRC(id)
	if err != nil {
		return err
	}
	t.setRC(id, r+1)
	return nil
}

// decRef drops one reference to a node, freeing it (and dropping its
// references) when none is left.
func (t *Trees) decRef(id uint64) error {
	r, err := t.getRC(id)
	if err != nil {
		return err
	}
	if r > 1 {
		t.setRC(id, r-1)
		return nil
	}
	n, err := t.load(id)
	if err != nil {
		return err
	}
	if n.level == 0 {
		for _, e := range n.ext {
			t.segAdd(e.seg, -int64(e.n))
		}
	} else {
		for _, c := range n.kids {
			if err := t.decRef(c.id); err != nil {
				return err
			}
		}
	}
	t.free(id)
	return nil
}

func (t *Trees) free(id uint64) {
	if t.watch != nil {
		t.watch.freeing(id)
	}
	delete(t.nodes, id)
	delete(t.dirtyNodes, id)
	delete(t.rc, id)
	delete(t.dirtyRC, id)
	t.freed[id] = true
}

func (t *Trees) segAdd(seg uint64, d int64) {
	t.segs[seg] += d
	t.dirtySegs[seg] = true
}

func (t *Trees) markDirty(n *node) {
	if t.watch != nil {
		t.watch.dirtied(n)
	}
	n.dirty = true
	t.dirtyNodes[n.id] = n
}

func (t *Trees) newNode(h *Head, level uint8) *node {
	n := &node{id: t.db.allocNode(), level: level, gen: h.Gen}
	t.nodes[n.id] = n
	t.markDirty(n)
	return n
}

// mutable returns a node the head may change: the node itself when the
// head owns it (same gen) or is its only referrer (refcount 1: adopted),
// otherwise a copy that takes over one reference from the original.
func (t *Trees) mutable(h *Head, id uint64) (*node, error) {
	n, err := t.load(id)
	if err != nil {
		return nil, err
	}
	if n.gen == h.Gen {
		return n, nil
	}
	r, err := t.getRC(id)
	if err != nil {
		return nil, err
	}
	if r == 1 {
		n.gen = h.Gen
		t.markDirty(n)
		return n, nil
	}
	c := t.newNode(h, n.level)
	if n.level == 0 {
		c.ext = append(make([]extent, 0, len(n.ext)+2), n.ext...)
		for _, e := range n.ext {
			t.segAdd(e.seg, int64(e.n))
		}
	} else {
		c.kids = append(make([]child, 0, len(n.kids)+1), n.kids...)
		for _, k := range n.kids {
			if err := t.incRef(k.id); err != nil {
				return nil, err
			}
		}
	}
	t.setRC(id, r-1)
	return c, nil
}

// ---- heads ----

// head returns vol's head, reading the committed one into the cache the
// first time. Caller holds mu exclusively.
func (t *Trees) head(vol uint64) (*Head, error) {
	if h := t.heads[vol]; h != nil {
		return h, nil
	}
	h, err := t.readHead(vol)
	if err != nil {
		return nil, err
	}
	t.heads[vol] = h
	return h, nil
}

// readHead reads vol's committed head from Pebble (the zero Head for a
// volume never committed).
func (t *Trees) readHead(vol uint64) (*Head, error) {
	h := &Head{}
	v, err := t.db.get(key64(pfxHead, vol))
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return nil, err
	default:
		if err := decodeHead(v, h); err != nil {
			return nil, fmt.Errorf("head of volume %d: %w", vol, err)
		}
	}
	return h, nil
}

// loadHead caches vol's committed head, read from Pebble without holding
// mu, so that the first read of a volume after a mount (a cold Pebble read)
// does not stop every other volume's reads and writes. A head, once
// cached, stays cached (DeleteVolume leaves an empty one), and every
// change goes to the cached one: while vol is not cached, what Pebble holds
// is its head, and if it was cached meanwhile the cached one wins.
func (t *Trees) loadHead(vol uint64) (Head, error) {
	h, err := t.readHead(vol)
	if err != nil {
		return Head{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.heads[vol]; c != nil {
		return *c, nil
	}
	t.heads[vol] = h
	return *h, nil
}

func (t *Trees) dirtyHead(vol uint64, h *Head) {
	t.touchHead(vol, h)
	t.changed[vol] = true
}

// touchHead marks a head dirty for a change of its times only.
func (t *Trees) touchHead(vol uint64, h *Head) {
	if h.Gen == 0 {
		h.Gen = t.db.allocGen()
	}
	t.dirtyHeads[vol] = true
	delete(t.dropHeads, vol)
}

// Settled reports whether everything the volume's head and tree hold,
// but its times, is committed: no change since the last flush, and no
// flushed batch of it still on its way (fs's fsync journal may then make
// the volume's cached blocks durable on their own).
func (t *Trees) Settled(vol uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.changed[vol] && t.pending[vol] == 0
}

// Landed tells the trees that f's batch is durable.
func (t *Trees) Landed(f *Flushed) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.unpend(f)
}

func (t *Trees) unpend(f *Flushed) {
	for vol := range f.changed {
		if t.pending[vol]--; t.pending[vol] <= 0 {
			delete(t.pending, vol)
		}
	}
}

// Head returns a copy of a volume's head (the zero Head for a volume never
// written).
func (t *Trees) Head(vol uint64) (Head, error) {
	t.mu.RLock()
	h := t.heads[vol]
	var c Head
	if h != nil {
		c = *h
	}
	t.mu.RUnlock()
	if h != nil {
		return c, nil
	}
	return t.loadHead(vol)
}

// SetAttrs sets a volume's size and times (zero times are left alone).
// Blocks beyond the size are the caller's to punch first.
func (t *Trees) SetAttrs(vol, size uint64, mtime, ctime int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	h, err := t.head(vol)
	if err != nil {
		return err
	}
	h.Size = size
	if mtime != 0 {
		h.Mtime = mtime
	}
	if ctime != 0 {
		h.Ctime = ctime
	}
	t.dirtyHead(vol, h)
	return nil
}

// SetTimes sets a volume's mtime and ctime and nothing else, in one step
// under the trees' lock: a timestamp change must never write back a size
// it read earlier (a write may have extended the volume since).
func (t *Trees) SetTimes(vol uint64, mtime, ctime int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	h, err := t.head(vol)
	if err != nil {
		return err
	}
	h.Mtime, h.Ctime = mtime, ctime
	t.touchHead(vol, h)
	return nil
}

// Extend raises a volume's size to at least size and sets its times (a
// write). Atomic with respect to other writes of the same volume.
func (t *Trees) Extend(vol, size uint64, mtime int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	h, err := t.head(vol)
	if err != nil {
		return err
	}
	h.Mtime, h.Ctime = mtime, mtime
	if size > h.Size {
		h.Size = size
		t.dirtyHead(vol, h)
	} else {
		t.touchHead(vol, h)
	}
	return nil
}

// ---- the mapping operations ----

type op struct {
	punch bool
	lo    uint64 // first block of the whole operation
	seg   uint64
	idx   uint32
}

// Map points blocks [first, first+n) of vol at records idx.. of seg,
// dropping whatever they pointed at before.
func (t *Trees) Map(vol, first, n, seg uint64, idx uint32) error {
	if first+n > MaxBlocks || n == 0 || seg == 0 {
		return fmt.Errorf("%w: map %d+%d", ErrTooLarge, first, n)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	h, err := t.head(vol)
	if err != nil {
		return err
	}
	t.dirtyHead(vol, h)
	t.grow(h, first+n-1)
	return t.applyRoot(h, first, first+n, &op{lo: first, seg: seg, idx: idx})
}

// Punch makes blocks [first, first+n) holes. n may reach past the end.
func (t *Trees) Punch(vol, first, n uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	h, err := t.head(vol)
	if err != nil {
		return err
	}
	if h.Root == 0 || h.Height == 0 {
		return nil
	}
	end := min(first+n, span(int(h.Height)-1))
	if n > MaxBlocks {
		end = span(int(h.Height) - 1)
	}
	if first >= end {
		return nil
	}
	t.dirtyHead(vol, h)
	return t.applyRoot(h, first, end, &op{punch: true})
}

func (t *Trees) grow(h *Head, block uint64) {
	need := heightFor(block)
	if h.Root == 0 {
		h.Height = max(h.Height, need)
		return
	}
	for h.Height < need {
		r := t.newNode(h, h.Height)
		r.kids = []child{{slot: 0, id: h.Root, blocks: h.Blocks}}
		h.Root = r.id
		h.Height++
	}
}

func (t *Trees) applyRoot(h *Head, lo, hi uint64, o *op) error {
	id, cnt, err := t.apply(h, h.Root, int(h.Height)-1, 0, lo, hi, o)
	if err != nil {
		return err
	}
	h.Root, h.Blocks = id, cnt
	return nil
}

// apply performs o on [lo, hi) within the subtree id (level, covering
// base..base+span) and returns the subtree's new root (0 if it became empty)
// and its mapped-block count.
func (t *Trees) apply(h *Head, id uint64, level int, base, lo, hi uint64, o *op) (uint64, uint64, error) {
	sp := span(level)
	if id != 0 && lo == base && hi == base+sp {
		// The whole subtree is replaced: drop it instead of copying it.
		if err := t.decRef(id); err != nil {
			return 0, 0, err
		}
		id = 0
	}
	if id == 0 && o.punch {
		return 0, 0, nil
	}
	var n *node
	var err error
	if id == 0 {
		n = t.newNode(h, uint8(level))
	} else if n, err = t.mutable(h, id); err != nil {
		return 0, 0, err
	}
	t.markDirty(n)
	if level == 0 {
		t.leafSet(n, base, lo, hi, o)
	} else {
		csp := span(level - 1)
		var slots []uint64
		if o.punch {
			for _, c := range n.kids {
				cb := base + uint64(c.slot)*csp
				if cb < hi && cb+csp > lo {
					slots = append(slots, uint64(c.slot))
				}
			}
		} else {
			for s := (lo - base) / csp; s <= (hi-1-base)/csp; s++ {
				slots = append(slots, s)
			}
		}
		for _, s := range slots {
			cb := base + s*csp
			i := sort.Search(len(n.kids), func(i int) bool { return uint64(n.kids[i].slot) >= s })
			found := i < len(n.kids) && uint64(n.kids[i].slot) == s
			var cid uint64
			if found {
				cid = n.kids[i].id
			}
			nid, cnt, err := t.apply(h, cid, level-1, cb, max(lo, cb), min(hi, cb+csp), o)
			if err != nil {
				return 0, 0, err
			}
			switch {
			case nid == 0 && found:
				n.kids = append(n.kids[:i], n.kids[i+1:]...)
			case nid != 0 && found:
				n.kids[i] = child{slot: uint16(s), id: nid, blocks: cnt}
			case nid != 0:
				n.kids = append(n.kids, child{})
				copy(n.kids[i+1:], n.kids[i:])
				n.kids[i] = child{slot: uint16(s), id: nid, blocks: cnt}
			}
		}
	}
	if n.empty() {
		t.free(n.id) // owned, so its only reference is the one we drop
		return 0, 0, nil
	}
	return n.id, n.blocks(), nil
}

// leafSet applies o to blocks [lo, hi) of leaf n (which covers base..).
func (t *Trees) leafSet(n *node, base, lo, hi uint64, o *op) {
	a, b := uint16(lo-base), uint16(hi-base)
	out := make([]extent, 0, len(n.ext)+2)
	for _, e := range n.ext {
		es, ee := e.slot, e.slot+e.n
		if ee <= a || es >= b {
			out = append(out, e)
			continue
		}
		t.segAdd(e.seg, -int64(min(ee, b)-max(es, a)))
		if es < a {
			out = append(out, extent{slot: es, n: a - es, seg: e.seg, idx: e.idx})
		}
		if ee > b {
			out = append(out, extent{slot: b, n: ee - b, seg: e.seg, idx: e.idx + uint32(b-es)})
		}
	}
	if !o.punch {
		ne := extent{slot: a, n: b - a, seg: o.seg, idx: o.idx + uint32(lo-o.lo)}
		t.segAdd(o.seg, int64(ne.n))
		i := sort.Search(len(out), func(i int) bool { return out[i].slot > a })
		if i > 0 {
			if p := out[i-1]; p.slot+p.n == a && p.seg == ne.seg && p.idx+uint32(p.n) == ne.idx {
				ne = extent{slot: p.slot, n: p.n + ne.n, seg: p.seg, idx: p.idx}
				i--
				out = append(out[:i], out[i+1:]...)
			}
		}
		if i < len(out) {
			if q := out[i]; ne.slot+ne.n == q.slot && q.seg == ne.seg && ne.idx+uint32(ne.n) == q.idx {
				ne.n += q.n
				out = append(out[:i], out[i+1:]...)
			}
		}
		out = append(out, extent{})
		copy(out[i+1:], out[i:])
		out[i] = ne
	}
	n.ext = out
}

// ---- reads ----

// Lookup returns the mappings of blocks [first, first+n) of vol in order,
// holes included, covering the range exactly.
func (t *Trees) Lookup(vol, first, n uint64) ([]Mapping, error) {
	return t.lookupRetry(vol, nil, first, n)
}

// LookupHead is Lookup on a frozen head (a snapshot).
func (t *Trees) LookupHead(h Head, first, n uint64) ([]Mapping, error) {
	return t.lookupRetry(0, &h, first, n)
}

// lookupRetry walks vol's head (or frozen, when not nil) under t.mu held
// shared, through cached nodes only: lookups of every volume walk side by
// side, and wait only for a change in progress. At a head or a node that
// is not cached it drops the lock, reads it from Pebble, caches it and
// walks again. So a cold read (a Pebble read, maybe from disk) never holds
// the lock every volume's reads and writes need: cold reads of different
// volumes overlap. A node not in the cache is clean, and node ids are
// never reused, so what Pebble holds for it is its content.
func (t *Trees) lookupRetry(vol uint64, frozen *Head, first, n uint64) ([]Mapping, error) {
	for {
		t.mu.RLock()
		h := frozen
		if h == nil {
			if h = t.heads[vol]; h == nil {
				t.mu.RUnlock()
				if _, err := t.loadHead(vol); err != nil {
					return nil, err
				}
				continue
			}
			if t.walkHook != nil {
				t.walkHook(vol)
			}
		}
		out, err := t.lookup(h, first, n, true)
		t.mu.RUnlock()
		var miss *missError
		if !errors.As(err, &miss) {
			return out, err
		}
		v, err := t.db.get(key64(pfxNode, miss.id))
		if errors.Is(err, ErrNotFound) {
			// Freed and deleted since the walk saw its parent: walk again
			// (the parent changed too); a node really missing fails in load.
			t.mu.Lock()
			_, err = t.load(miss.id)
			t.mu.Unlock()
			if err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		nd, err := decodeNode(miss.id, v)
		if err != nil {
			return nil, err
		}
		t.mu.Lock()
		if t.nodes[miss.id] == nil && !t.freed[miss.id] {
			t.nodes[miss.id] = nd
		} else if t.nodes[miss.id] == nil {
			// Freed, but a frozen head copy (a snapshot being read as it
			// is deleted) still reaches it: use it for this walk only, or
			// the walk would miss it forever.
			if t.fetched == nil {
				t.fetched = map[uint64]*node{}
			}
			t.fetched[miss.id] = nd
			defer func(id uint64) { t.mu.Lock(); delete(t.fetched, id); t.mu.Unlock() }(miss.id)
		}
		t.mu.Unlock()
	}
}

// missError: a walk through cached nodes only met a node that is not cached.
type missError struct{ id uint64 }

func (e *missError) Error() string { return fmt.Sprintf("meta: node %d not cached", e.id) }

// lookup is Lookup on h; with cachedOnly, through cached nodes only (for
// a caller holding mu shared), failing with *missError at another.
func (t *Trees) lookup(h *Head, first, n uint64, cachedOnly bool) ([]Mapping, error) {
	var out []Mapping
	next := first
	end := first + n
	err := t.walkHead(h, first, end, cachedOnly, func(m Mapping) bool {
		if m.Block > next {
			out = append(out, Mapping{Block: next, N: m.Block - next})
		}
		out = append(out, m)
		next = m.Block + m.N
		return true
	})
	if err != nil {
		return nil, err
	}
	if next < end {
		out = append(out, Mapping{Block: next, N: end - next})
	}
	return out, nil
}

func (t *Trees) walkHead(h *Head, lo, hi uint64, cachedOnly bool, fn func(Mapping) bool) error {
	if h.Root == 0 || h.Height == 0 {
		return nil
	}
	hi = min(hi, span(int(h.Height)-1))
	if lo >= hi {
		return nil
	}
	_, err := t.walk(h.Root, int(h.Height)-1, 0, lo, hi, cachedOnly, fn)
	return err
}

// walk calls fn for every mapped run within [lo, hi), in order; it stops
// (returning false) when fn does. With cachedOnly it loads no node (see
// cached): the caller may hold mu shared.
func (t *Trees) walk(id uint64, level int, base, lo, hi uint64, cachedOnly bool, fn func(Mapping) bool) (bool, error) {
	load := t.load
	if cachedOnly {
		load = t.cached
	}
	n, err := load(id)
	if err != nil {
		return false, err
	}
	if level == 0 {
		for _, e := range n.ext {
			es, ee := base+uint64(e.slot), base+uint64(e.slot)+uint64(e.n)
			if ee <= lo || es >= hi {
				continue
			}
			s := max(es, lo)
			if !fn(Mapping{Block: s, N: min(ee, hi) - s, Seg: e.seg, Idx: e.idx + uint32(s-es)}) {
				return false, nil
			}
		}
		return true, nil
	}
	csp := span(level - 1)
	for _, c := range n.kids {
		cb := base + uint64(c.slot)*csp
		if cb+csp <= lo || cb >= hi {
			continue
		}
		if ok, err := t.walk(c.id, level-1, cb, lo, hi, cachedOnly, fn); !ok || err != nil {
			return ok, err
		}
	}
	return true, nil
}

// NextData returns the first mapped block >= from, or ok=false.
func (t *Trees) NextData(vol, from uint64) (uint64, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h, err := t.head(vol)
	if err != nil {
		return 0, false, err
	}
	return t.nextData(h, from)
}

// NextDataIn is NextData in a frozen head (a snapshot).
func (t *Trees) NextDataIn(h Head, from uint64) (uint64, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nextData(&h, from)
}

func (t *Trees) nextData(h *Head, from uint64) (uint64, bool, error) {
	var blk uint64
	found := false
	err := t.walkHead(h, from, MaxBlocks, false, func(m Mapping) bool {
		blk, found = m.Block, true
		return false
	})
	return blk, found, err
}

// NextHole returns the first unmapped block >= from.
func (t *Trees) NextHole(vol, from uint64) (uint64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h, err := t.head(vol)
	if err != nil {
		return 0, err
	}
	return t.nextHole(h, from)
}

// NextHoleIn is NextHole in a frozen head (a snapshot).
func (t *Trees) NextHoleIn(h Head, from uint64) (uint64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nextHole(&h, from)
}

func (t *Trees) nextHole(h *Head, from uint64) (uint64, error) {
	next := from
	err := t.walkHead(h, from, MaxBlocks, false, func(m Mapping) bool {
		if m.Block > next {
			return false
		}
		next = m.Block + m.N
		return true
	})
	return next, err
}

// ---- snapshots, clones, deletion ----

// Freeze returns a frozen copy of vol's head that shares its tree (the root
// gains a reference) and moves the head to a new generation, so that every
// node reachable from the frozen copy is copied before it is changed.
func (t *Trees) Freeze(vol uint64) (Head, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h, err := t.head(vol)
	if err != nil {
		return Head{}, err
	}
	return t.freeze(vol, h)
}

// SetHead makes vol's head a writable copy of frozen: it shares the tree
// (the root gains a reference) under a new generation. Whatever vol had
// before is dropped.
func (t *Trees) SetHead(vol uint64, frozen Head) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.setHead(vol, frozen)
}

// DropFrozen releases a frozen head's reference to its tree.
func (t *Trees) DropFrozen(h Head) error {
	if h.Root == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.decRef(h.Root)
}

// DeleteVolume drops a volume's tree, its head and its snapshots.
func (t *Trees) DeleteVolume(vol uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.dropSnapshots(vol); err != nil {
		return err
	}
	h, err := t.head(vol)
	if err != nil {
		return err
	}
	if h.Root != 0 {
		if err := t.decRef(h.Root); err != nil {
			return err
		}
	}
	// An empty head stays cached so that the committed one is not read
	// back before the drop is flushed.
	t.heads[vol] = &Head{}
	delete(t.dirtyHeads, vol)
	t.dropHeads[vol] = true
	t.changed[vol] = true
	return nil
}

// Heads lists the volumes that have a committed head.
func (t *Trees) Heads() ([]uint64, error) {
	var out []uint64
	err := t.db.scan([]byte{pfxHead}, func(k, v []byte) bool {
		out = append(out, binary.BigEndian.Uint64(k[1:]))
		return true
	})
	return out, err
}

// SegRefs returns the live references into every segment that has any.
func (t *Trees) SegRefs() map[uint64]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[uint64]int64, len(t.segs))
	for s, n := range t.segs {
		if n != 0 {
			out[s] = n
		}
	}
	return out
}

// ---- commit ----

// Flushed is what one Flush wrote, so a failed commit can be retried.
type Flushed struct {
	nodes                         map[uint64]*node
	freed, rc, heads, drops, segs map[uint64]bool
	snaps                         map[snapKey]bool
	changed                       map[uint64]bool
	// Dead lists segments that no tree references once the batch commits.
	Dead []uint64
}

// Dirty reports how many nodes wait for the next flush.
func (t *Trees) Dirty() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.dirtyNodes) + len(t.dirtyHeads) + len(t.dropHeads) + len(t.freed) + len(t.dirtySnaps)
}

// Flush writes every change since the last flush into b. The caller must
// make the blocks durable, then commit b; if that fails it calls Unflush.
func (t *Trees) Flush(b *Batch) *Flushed {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := &Flushed{nodes: t.dirtyNodes, freed: t.freed, rc: t.dirtyRC, heads: t.dirtyHeads, drops: t.dropHeads, segs: t.dirtySegs,
		snaps: t.dirtySnaps, changed: t.changed}
	for vol := range t.changed {
		t.pending[vol]++
	}
	for id, n := range t.dirtyNodes {
		b.b.Set(key64(pfxNode, id), encodeNode(n), nil)
		n.dirty = false
	}
	for id := range t.freed {
		b.b.Delete(key64(pfxNode, id), nil)
		b.b.Delete(key64(pfxRef, id), nil)
	}
	for id := range t.dirtyRC {
		if t.freed[id] {
			continue
		}
		if r := t.rc[id]; r == 1 {
			b.b.Delete(key64(pfxRef, id), nil)
		} else {
			var v [4]byte
			binary.BigEndian.PutUint32(v[:], r)
			b.b.Set(key64(pfxRef, id), v[:], nil)
		}
	}
	for vol := range t.dirtyHeads {
		b.b.Set(key64(pfxHead, vol), encodeVersioned(headVersion, t.heads[vol]), nil)
	}
	for vol := range t.dropHeads {
		b.b.Delete(key64(pfxHead, vol), nil)
	}
	for k := range t.dirtySnaps {
		if s := t.snaps[k.vol][k.name]; s != nil {
			b.b.Set(key64s(pfxSnap, k.vol, k.name), encodeVersioned(snapVersion, s), nil)
		} else {
			b.b.Delete(key64s(pfxSnap, k.vol, k.name), nil)
		}
	}
	for seg := range t.dirtySegs {
		if n := t.segs[seg]; n > 0 {
			b.b.Set(key64(pfxSegment, seg), binary.AppendVarint(nil, n), nil)
		} else {
			if n < 0 {
				panic(fmt.Sprintf("meta: segment %016x has %d references", seg, n))
			}
			delete(t.segs, seg)
			b.b.Delete(key64(pfxSegment, seg), nil)
			f.Dead = append(f.Dead, seg)
		}
	}
	b.PutSuper()
	t.resetDirty()
	return f
}

// Unflush marks what f wrote dirty again after its batch failed to commit.
func (t *Trees) Unflush(f *Flushed) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, n := range f.nodes {
		if t.nodes[id] == n {
			t.markDirty(n)
		}
	}
	for id := range f.freed {
		t.freed[id] = true
	}
	for id := range f.rc {
		if _, ok := t.rc[id]; ok {
			t.dirtyRC[id] = true
		}
	}
	for vol := range f.heads {
		if t.heads[vol] != nil {
			t.dirtyHeads[vol] = true
		}
	}
	for vol := range f.drops {
		if !t.dirtyHeads[vol] {
			t.dropHeads[vol] = true
		}
	}
	for seg := range f.segs {
		t.dirtySegs[seg] = true
	}
	for k := range f.snaps {
		t.dirtySnaps[k] = true
	}
	t.unpend(f)
	for vol := range f.changed {
		t.changed[vol] = true
	}
}

// Trim drops clean nodes from the cache when it holds more than CacheNodes.
func (t *Trees) Trim() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.nodes) <= t.CacheNodes {
		return
	}
	for id, n := range t.nodes {
		if !n.dirty {
			delete(t.nodes, id)
			if len(t.nodes) <= t.CacheNodes*3/4 {
				break
			}
		}
	}
	for id := range t.rc {
		if !t.dirtyRC[id] {
			delete(t.rc, id)
		}
	}
}
