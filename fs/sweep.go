package fs

// Room "space" (doc.go, "Rooms"; see compact.go).

import (
	"fmt"
	"sort"
	"sync/atomic"

	"github.com/vafs/vafs/blocks"
)

// sweepWalks counts the walks reclaim made: a clean open or close makes
// none (tests).
var sweepWalks atomic.Int64

// reclaim removes the segments of this data dir that no committed tree
// references, at open (appended after the last commit, dead ones whose
// removal a crash interrupted) and at close (the last open segment of
// each class).
//
// A stored count of 0 only makes a segment a candidate; a walk of every
// committed tree (heads and snapshots) decides, because a count can be
// wrong (a lost "g" key) and a deleted segment cannot come back. The walk
// runs only when there are candidates, so a clean open or close stays
// cheap. Candidates are this host's segments only: a segment whose host
// id is another's is never ours to delete (the cluster will keep other
// hosts' copies in the same store). No open segment (of any class) is one.
//
// A candidate the walk finds referenced is kept and logged loudly; at
// open its count is restored from the walk, so that overwriting one of
// its blocks cannot drive the count below 0 and the close does not see
// it as a candidate again, and reclaim reports true: the caller commits.
// If the walk fails (a tree is damaged) every candidate is kept.
//
// The caller makes sure nothing is being written (open, close); the state
// lock is held anyway, as for every walk.
func (f *FS) reclaim(atOpen bool) (restored bool, err error) {
	f.state.Lock()
	defer f.state.Unlock()
	f.gcMu.Lock() // no read of a segment in flight while it is removed
	defer f.gcMu.Unlock()
	host := f.db.Super().HostID
	ids, err := f.opts.Store.List()
	if err != nil {
		return false, fmt.Errorf("fs: sweep: list segments: %w", err)
	}
	refs := f.trees.SegRefs()
	cands := map[uint64]bool{}
	for _, id := range ids {
		if id.Host() == host && refs[uint64(id)] == 0 && !f.log.IsOpen(id) {
			cands[uint64(id)] = true
		}
	}
	if len(cands) == 0 {
		return false, nil
	}
	sweepWalks.Add(1)
	roots, err := f.trees.Roots()
	var used map[uint64]int64
	if err == nil {
		used, err = f.trees.SegmentRefs(roots, cands)
	}
	if err != nil {
		f.lg.Printf("CHECK: cannot tell which of %d segments without a live count no tree references: %v; keeping them all; run vafs fsck", len(cands), err)
		return false, nil
	}
	segs := make([]uint64, 0, len(cands))
	for seg := range cands {
		segs = append(segs, seg)
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i] < segs[j] })
	for _, seg := range segs {
		id := blocks.SegmentID(seg)
		if n := used[seg]; n > 0 {
			f.lg.Printf("CHECK: segment %s has no live count but trees reference it (%d block references); keeping it; run vafs fsck --repair on the unmounted data dir to check every other count", id, n)
			if atOpen {
				f.trees.RestoreSegRefs(seg, n)
				restored = true
			}
			continue
		}
		if err := f.log.Remove(id); err != nil {
			return restored, fmt.Errorf("fs: sweep: %w", err)
		}
	}
	return restored, nil
}
