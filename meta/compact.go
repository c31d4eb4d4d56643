package meta

import (
	"errors"
	"fmt"
	"sort"
)

// Compaction (docs/compaction.md): the live records of a mostly-dead
// segment are copied elsewhere by the caller, then Relocate points every
// leaf that maps them at the copies. A move does not change what any tree
// reads, so a leaf is rewritten in place even when it is shared by several
// heads and snapshots; the rewritten leaves, the moved segment counts and
// the victim's count of 0 reach Pebble in the caller's next commit.
//
// The walk that finds the live records and the copies run while the trees
// change (writes, punches, snapshots, clones, deletions): a Watch, started
// before the walk, records what changed meanwhile, and Relocate redirects
// only what the leaves map at the moment it runs.

// ErrRelocate: a relocation was refused and nothing was changed.
var ErrRelocate = errors.New("meta: relocation refused")

// NotMovedError: some leaf maps records of the victim that were not moved
// (mapped since the walk, e.g. by a copy_file_range from a leaf the walk
// saw before the copy). Nothing was changed; the caller may copy them and
// call Relocate again. It is an ErrRelocate.
type NotMovedError struct {
	Victim  uint64
	Records []uint32 // ascending, distinct
}

func (e *NotMovedError) Error() string {
	return fmt.Sprintf("%v: segment %016x: %d mapped records were not moved (first %d)",
		ErrRelocate, e.Victim, len(e.Records), e.Records[0])
}

func (e *NotMovedError) Unwrap() error { return ErrRelocate }

// Loc is the place of a record.
type Loc struct {
	Seg uint64
	Idx uint32
}

// Watch records, from Trees.Watch to Close, the leaves created or changed
// (copied for a write, written in place, new) and the nodes freed. A walk
// that runs while the trees change may miss a leaf created after it passed
// by, and may meet a node freed after its parent was read: the touched
// leaves are Relocate's other candidates, the freed nodes are skipped by
// the walk and by Relocate. Every leaf that maps a segment at the end of
// the watch was either visited by the walk (and still exists) or touched.
//
// One watch at a time (fs runs one compaction pass at a time).
type Watch struct {
	t       *Trees
	touched map[uint64]bool
	freed   map[uint64]bool
	changes uint64 // node changes (dirtied or freed) since the watch began
}

// ErrWatching: a Watch is already running.
var ErrWatching = errors.New("meta: a watch is already running")

// Watch starts recording tree changes.
func (t *Trees) Watch() (*Watch, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.watch != nil {
		return nil, ErrWatching
	}
	t.watch = &Watch{t: t, touched: map[uint64]bool{}, freed: map[uint64]bool{}}
	return t.watch, nil
}

// Close stops recording.
func (w *Watch) Close() {
	w.t.mu.Lock()
	defer w.t.mu.Unlock()
	if w.t.watch == w {
		w.t.watch = nil
	}
}

// Changes counts the nodes changed or freed since the watch began: when it
// is the same after a walk as before it, the walk saw one consistent state
// of every tree.
func (w *Watch) Changes() uint64 {
	w.t.mu.Lock()
	defer w.t.mu.Unlock()
	return w.changes
}

// dirtied and freeing are called by markDirty and free, under t.mu.
func (w *Watch) dirtied(n *node) {
	w.changes++
	if n.level == 0 {
		w.touched[n.id] = true
	}
}

func (w *Watch) freeing(id uint64) {
	w.changes++
	w.freed[id] = true
}

// Relocate points every leaf that maps records of victim at their new
// places: record idx is now at moved[idx]. The candidates are leaves (those
// a WalkLive found for victim) and, with w (the Watch started before that
// walk), every leaf touched since, less the nodes freed since. What a leaf
// maps is read now, under the tree lock: a block written or punched since
// the walk no longer maps victim and is left alone (its copy is dead), and
// a shared leaf is rewritten once for every tree that reaches it.
//
// It checks everything before it changes anything: each candidate is a
// leaf, each record of victim that one maps was moved (else a
// *NotMovedError listing them), and the candidates map exactly as many
// blocks into victim as victim's stored reference count (else
// ErrRelocate: a leaf the walk missed, or a wrong count) — so that
// afterwards no tree references victim. A refusal changes nothing. It
// returns the number of leaves rewritten.
//
// Relocate is atomic with respect to every tree operation. The caller
// keeps anything that copies a mapping it looked up before (fs's
// copy_file_range, under its state lock) from putting a victim's record
// back after it.
func (t *Trees) Relocate(victim uint64, leaves []uint64, moved []Loc, w *Watch) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cands := leaves
	if w != nil {
		cands = append(append([]uint64(nil), leaves...), sortedKeys(w.touched)...)
	}
	nodes := make([]*node, 0, len(leaves))
	seen := map[uint64]bool{}
	var refs int64
	var missing []uint32
	for _, id := range cands {
		if seen[id] || (w != nil && w.freed[id]) {
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
		maps := false
		for _, e := range n.ext {
			if e.seg != victim {
				continue
			}
			maps = true
			for i := uint32(0); i < uint32(e.n); i++ {
				if x := e.idx + i; int(x) >= len(moved) || moved[x].Seg == 0 || moved[x].Seg == victim {
					missing = append(missing, x)
				}
			}
			refs += int64(e.n)
		}
		if maps {
			nodes = append(nodes, n)
		}
	}
	if len(missing) > 0 {
		sort.Slice(missing, func(i, j int) bool { return missing[i] < missing[j] })
		k := 0
		for _, x := range missing {
			if k == 0 || missing[k-1] != x {
				missing[k] = x
				k++
			}
		}
		return 0, &NotMovedError{Victim: victim, Records: missing[:k]}
	}
	if stored := t.segs[victim]; stored != refs {
		return 0, fmt.Errorf("%w: segment %016x: stored count %d, the leaves found map %d blocks into it",
			ErrRelocate, victim, stored, refs)
	}
	// The rewrite moves no block and changes no tree's shape: it is not a
	// change the watch must report.
	watch := t.watch
	t.watch = nil
	defer func() { t.watch = watch }()
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
		for _, e := range n.ext {
			if e.seg != victim {
				put(e)
				continue
			}
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
		n.ext = out
		t.markDirty(n)
		rewritten++
	}
	if t.segs[victim] != 0 {
		// Cannot happen after the checks above.
		panic(fmt.Sprintf("meta: segment %016x has %d references after relocation", victim, t.segs[victim]))
	}
	return rewritten, nil
}
