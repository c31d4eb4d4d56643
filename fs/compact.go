package fs

// Room "space" (doc.go, "Rooms"): compaction. With sweep.go (dead and
// unreferenced segments) and usage.go (describe, df), the room that gives
// space back and counts it. It calls namespace, snapshot, volume, commit,
// cache and store.

import (
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/meta"
)

// Compaction (docs/compaction.md): a sealed segment whose live records are
// fewer than half of the records it holds has them copied to the open
// segment of its own placement class, the leaves that map them rewritten
// in place to the copies, and is removed by the next commit once its
// reference count is 0.

const (
	compactEvery     = 30 * time.Second // background pass interval
	compactWalkEvery = 10 * time.Minute // walk without a cheap candidate at most this often
	// compactMaxMove bounds the live blocks one pass moves (64 MiB), and so
	// how long writers wait on the state lock for one pass.
	compactMaxMove = 16384
)

// Compact runs one compaction pass now (the background pass runs every
// 30 s): sealed segments less than half live have their live blocks moved
// and their files removed. Durable on return. A segment that cannot be
// compacted (a corrupt live record, a reference count that disagrees with
// the trees) is left exactly as it was and reported in the error, which
// joins one error per refused segment; the others are still compacted.
func (f *FS) Compact() (CompactStats, error) { return f.compact(nil) }

// compactState is what the FS keeps for its compaction passes.
type compactState struct {
	mu sync.Mutex // one pass at a time (the trees' Watch is one at a time too)
	// hook, when set (tests), runs in each pass between the copies of a
	// victim and the step that validates and redirects its leaves.
	hook func(victim blocks.SegmentID)
}

type victim struct {
	id          blocks.SegmentID
	live, recs  uint64
	size        int64
	refs, walks int64 // stored count and what the walked leaves map
	quiet       bool  // no tree changed from the walk's start to refs' reading
}

// errSkipped: a victim was left for a later pass because the trees kept
// changing under it (not an error to report; not a refusal).
var errSkipped = errors.New("fs: compact: victim left for a later pass")

// Tries of the validating step per victim: each NotMovedError (records
// mapped since the walk) has them copied and tries again.
const compactTries = 4

// compact is one pass; c is the background compactor (its segment size
// cache and refused set) or nil for an explicit pass.
func (f *FS) compact(c *compactor) (CompactStats, error) {
	var st CompactStats
	f.cpass.mu.Lock()
	defer f.cpass.mu.Unlock()
	done, moved, errs := f.compactPass(c)
	st.Moved = moved
	if len(done) == 0 {
		return st, errors.Join(errs...)
	}
	// The commit syncs the copies before the batch that points the trees
	// at them, and then removes the victims (count 0), waiting for reads
	// in flight on them (gcMu).
	if err := f.commitWith(nil); err != nil {
		return st, errors.Join(append(errs, err)...)
	}
	var freed int64
	for _, v := range done {
		if _, err := f.segmentSize(v.id); errors.Is(err, blocks.ErrNotFound) {
			st.Segments++
			freed += v.size
		} else {
			errs = append(errs, fmt.Errorf("fs: compact: segment %s is still stored after its blocks moved", v.id))
		}
	}
	if net := freed - int64(moved)*blocks.RecordSize; net > 0 {
		st.Freed = uint64(net)
	}
	return st, errors.Join(errs...)
}

// compactPass walks every tree, picks the victims and moves them, without
// the state lock: writes, punches, commits, snapshots go on beside it. A
// Watch started before the walk records which leaves changed and which
// nodes went meanwhile; only the last step per victim (Trees.Relocate,
// which reads the leaves as they are then and redirects what still maps
// the victim) runs with the state lock held exclusively. The caller holds
// f.cpass.mu. It returns the victims whose leaves were redirected (their
// count is 0; the next commit removes them) and the records copied.
func (f *FS) compactPass(c *compactor) (done []victim, moved uint64, errs []error) {
	w, err := f.trees.Watch()
	if err != nil {
		return nil, 0, []error{fmt.Errorf("fs: compact: %w", err)}
	}
	defer w.Close()
	start := w.Changes()
	roots, err := liveRoots(f.trees)
	if err != nil {
		return nil, 0, []error{err}
	}
	live, err := f.walkWatched(w, roots)
	if err != nil {
		return nil, 0, []error{err}
	}
	segRefs := f.trees.SegRefs()
	quiet := w.Changes() == start
	var cands []victim
	for seg, n := range segRefs {
		id := blocks.SegmentID(seg)
		if f.log.IsOpen(id) || c.isRefused(seg) {
			continue
		}
		size, err := c.segmentSize(f, id)
		if err != nil {
			errs = append(errs, fmt.Errorf("fs: compact: segment %s: %w", id, err))
			continue
		}
		v := victim{id: id, live: live.Count(seg), recs: segmentRecords(size), size: size, refs: n, walks: live.Refs(seg), quiet: quiet}
		if v.live*2 < v.recs {
			cands = append(cands, v)
		}
	}
	// Emptiest first: the most space back per block moved.
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if x, y := a.live*b.recs, b.live*a.recs; x != y {
			return x < y
		}
		return a.id < b.id
	})
	for _, v := range cands {
		if moved > 0 && moved+v.live > compactMaxMove {
			break
		}
		n, err := f.compactSegment(v, live, w, start)
		moved += n
		switch {
		case err == nil:
			done = append(done, v)
			c.unstrike(uint64(v.id))
		case errors.Is(err, errSkipped):
			f.lg.Printf("compact: segment %s: %v", v.id, err)
			c.strike(uint64(v.id))
		case errors.Is(err, ErrNoSpace):
			errs = append(errs, err)
			f.lg.Printf("compact: no space to move segment %s; trying again later", v.id)
			return done, moved, errs
		default:
			errs = append(errs, err)
			f.lg.Printf("compact: segment %s refused, left as it was: %v", v.id, err)
			c.refuse(uint64(v.id))
		}
	}
	return done, moved, errs
}

// compactSegment copies v's live records to the log and points the trees
// at the copies; it returns the records it copied. Every live record is
// read and verified before anything is appended, so a corrupt one stops
// it with nothing copied; a failure later (no space, a refused
// relocation) leaves only unreferenced copies, which are dead records like
// any overwritten block.
//
// Only the last step holds the state lock (exclusively, so that no write,
// flush step or copy_file_range is half done and no commit is captured):
// Relocate redirects what the leaves map at that moment. A block written
// or punched since the walk no longer maps the victim and keeps its new
// value (its copy is dead); records mapped since the walk (a
// copy_file_range from a leaf the walk had seen before) are copied and the
// step is tried again.
func (f *FS) compactSegment(v victim, live *meta.Live, w *meta.Watch, walkStart uint64) (uint64, error) {
	seg := uint64(v.id)
	if v.quiet && v.refs != v.walks {
		// Nothing changed during the walk: it saw every tree whole, and
		// still disagrees with the count.
		return 0, fmt.Errorf("fs: compact: segment %s: stored count %d, the trees map %d blocks into it (a root the walk does not know?)",
			v.id, v.refs, v.walks)
	}
	idxs := live.Indexes(seg)
	if len(idxs) == 0 {
		if v.quiet {
			return 0, fmt.Errorf("fs: compact: segment %s: counted %d references, no live record", v.id, v.refs)
		}
		return 0, fmt.Errorf("%w: no live record found while the trees changed", errSkipped)
	}
	// The copies stay in the victim's class (its header says which), not
	// the class of a volume that maps them: a block keeps its placement.
	class, err := f.log.SegmentClass(v.id)
	if errors.Is(err, blocks.ErrNotFound) && f.trees.SegRefs()[seg] == 0 {
		return 0, fmt.Errorf("%w: its last blocks went before it was read", errSkipped)
	}
	if err != nil {
		if errors.Is(err, blocks.ErrChecksum) {
			f.lg.Printf("CORRUPT: compaction of segment %s: %v", v.id, err)
			corruptReads.Add(1)
		}
		return 0, fmt.Errorf("fs: compact: segment %s: %w", v.id, err)
	}
	moved := make([]meta.Loc, max(uint64(idxs[len(idxs)-1]+1), v.recs))
	var copied uint64
	for try := 1; ; try++ {
		n, err := f.copyRecords(v, class, idxs, moved)
		copied += n
		if errors.Is(err, blocks.ErrNotFound) && f.trees.SegRefs()[seg] == 0 {
			// Every block it held was overwritten or punched, and a commit
			// removed it meanwhile: nothing left to move.
			return copied, fmt.Errorf("%w: its last blocks went while it was being copied", errSkipped)
		}
		if err != nil {
			return copied, err
		}
		if try == 1 && f.cpass.hook != nil {
			f.cpass.hook(v.id)
		}
		f.state.Lock()
		quiet := w.Changes() == walkStart
		_, err = f.trees.Relocate(seg, live.Leaves(seg), moved, w)
		f.state.Unlock()
		var nm *meta.NotMovedError
		switch {
		case err == nil:
			return copied, nil
		case errors.As(err, &nm) && try < compactTries:
			idxs = nm.Records
			if need := int(idxs[len(idxs)-1]) + 1; need > len(moved) {
				moved = append(moved, make([]meta.Loc, need-len(moved))...)
			}
			continue
		case errors.Is(err, meta.ErrRelocate) && !quiet:
			// A leaf the walk missed (a snapshot deleted under it, the
			// only other way to its subtree created after it began): the
			// next pass walks again.
			return copied, fmt.Errorf("%w: %v", errSkipped, err)
		}
		return copied, fmt.Errorf("fs: compact: %w", err)
	}
}

// copyRecords reads the records idxs of v (each verified) and appends them
// to the log in class, in index order, one Log.Append per run of records
// written for consecutive blocks of one volume (so the copies keep their
// tags), setting moved[idx]. Nothing is appended unless every record read
// back whole.
func (f *FS) copyRecords(v victim, class blocks.Class, idxs []uint32, moved []meta.Loc) (uint64, error) {
	buf := make([]byte, len(idxs)*BlockSize)
	tags := make([]blocks.Tag, len(idxs))
	for i, idx := range idxs {
		// gcMu: a commit may remove the victim once writers have dropped
		// its last block; it waits for a read in flight, as for readers.
		f.gcMu.RLock()
		data, tag, err := f.log.ReadRecord(v.id, idx)
		if err == nil {
			copy(buf[i*BlockSize:], data)
		}
		f.gcMu.RUnlock()
		if err != nil {
			var ce *blocks.CorruptError
			if errors.As(err, &ce) {
				f.lg.Printf("CORRUPT: compaction of segment %s: %v", v.id, err)
				corruptReads.Add(1)
			}
			return 0, fmt.Errorf("fs: compact: segment %s record %d: %w", v.id, idx, err)
		}
		tags[i] = tag
	}
	for i := 0; i < len(idxs); {
		j := i + 1
		for j < len(idxs) && tags[j].Volume == tags[i].Volume && tags[j].Block == tags[j-1].Block+1 {
			j++
		}
		exts, err := f.log.Append(class, tags[i].Volume, tags[i].Block, buf[i*BlockSize:j*BlockSize])
		if err != nil {
			return uint64(i), f.ioErr(fmt.Sprintf("compact: segment %s: append", v.id), err)
		}
		k := i
		for _, e := range exts {
			for x := uint32(0); x < e.N; x++ {
				moved[idxs[k]] = meta.Loc{Seg: uint64(e.Seg), Idx: e.Index + x}
				k++
			}
		}
		i = j
	}
	return uint64(len(idxs)), nil
}

// compactor runs a pass every 30 s in the background. A pass walks every
// tree with writers held off, so it walks only when it is likely to find
// work: when some sealed segment's stored count is below half its records
// (the count is at least the live records, so the segment is surely a
// victim), or, failing that, at most every 10 minutes and only when the
// counts changed since the last walk — a segment whose records are shared
// (clones, snapshots) counts them more than once and is found only by a
// walk.
type compactor struct {
	f                *FS
	every, walkEvery time.Duration
	stop, done       chan struct{}
	stopOnce         sync.Once

	// Owned by the compactor's goroutine.
	sizes    map[uint64]int64 // sizes of sealed segments (they never change)
	refused  map[uint64]bool  // refused victims: not retried until the next mount
	strikes  map[uint64]int   // passes that left a victim because the trees changed under it
	lastWalk time.Time
	lastRefs map[uint64]int64
}

// startCompactor starts the background compaction; Close must call its
// Stop before it stops the committer.
func (f *FS) startCompactor() *compactor {
	switch every := f.opts.CompactInterval; {
	case every < 0:
		return nil
	case every > 0:
		return f.runCompactor(every, max(every, compactWalkEvery))
	}
	return f.runCompactor(compactEvery, compactWalkEvery)
}

func (f *FS) runCompactor(every, walkEvery time.Duration) *compactor {
	// The clock of the speculative walk starts at the mount: a remount
	// must not walk every tree at the first tick. With 1,000 snapshots of
	// a 1 GiB volume that walk loads some 64,000 cold nodes from Pebble
	// with writers held off, and it landed in the middle of the reads the
	// benchmark makes right after a remount (CPU per cold read 90 µs ->
	// 293 µs, qd16 IOPS 0.73x). Victims that the stored counts prove are
	// still found at the first tick.
	c := &compactor{f: f, every: every, walkEvery: walkEvery, stop: make(chan struct{}), done: make(chan struct{}),
		sizes: map[uint64]int64{}, refused: map[uint64]bool{}, lastWalk: time.Now()}
	go c.run()
	return c
}

// Stop ends the background compaction, waiting for a pass in progress.
// It may be called more than once, and on a nil compactor.
func (c *compactor) Stop() {
	if c == nil {
		return
	}
	c.stopOnce.Do(func() { close(c.stop) })
	<-c.done
}

func (c *compactor) run() {
	defer close(c.done)
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.tick()
		}
	}
}

func (c *compactor) tick() {
	if !c.due() {
		return
	}
	st, err := c.f.compact(c)
	c.lastWalk, c.lastRefs = time.Now(), c.f.trees.SegRefs()
	if st.Segments > 0 {
		c.f.lg.Printf("compacted %d segments, moved %d blocks, freed %d bytes", st.Segments, st.Moved, st.Freed)
	}
	if err != nil {
		c.f.lg.Printf("background compaction: %v", err)
	}
}

// due decides whether a pass is worth its walk.
func (c *compactor) due() bool {
	refs := c.f.trees.SegRefs()
	for seg := range c.sizes {
		if refs[seg] == 0 {
			delete(c.sizes, seg)
		}
	}
	for seg, n := range refs {
		id := blocks.SegmentID(seg)
		if c.refused[seg] || c.f.log.IsOpen(id) {
			continue
		}
		size, err := c.segmentSize(c.f, id)
		if err != nil {
			continue // the pass reports it
		}
		if uint64(n)*2 < segmentRecords(size) {
			return true
		}
	}
	return time.Since(c.lastWalk) >= c.walkEvery && !maps.Equal(refs, c.lastRefs)
}

// walkWatched is FS.walk while the trees change (compactPass).
func (f *FS) walkWatched(w *meta.Watch, roots []meta.Root) (*meta.Live, error) {
	l, err := f.trees.WalkLiveWatched(w, roots, f.segmentBlocks())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return l, nil
}

// segmentSize is f.segmentSize, cached for sealed segments when c is the
// background compactor.
func (c *compactor) segmentSize(f *FS, id blocks.SegmentID) (int64, error) {
	if c == nil {
		return f.segmentSize(id)
	}
	if s, ok := c.sizes[uint64(id)]; ok {
		return s, nil
	}
	s, err := f.segmentSize(id)
	if err == nil && !f.log.IsOpen(id) {
		c.sizes[uint64(id)] = s
	}
	return s, err
}

func (c *compactor) isRefused(seg uint64) bool { return c != nil && c.refused[seg] }

func (c *compactor) refuse(seg uint64) {
	if c != nil {
		c.refused[seg] = true
	}
}

// compactStrikes: a victim that passes in a row had to leave because the
// trees changed under them is refused like a corrupt one, so that a count
// that is wrong on a mount that is never quiet cannot make every pass walk.
const compactStrikes = 3

func (c *compactor) unstrike(seg uint64) {
	if c != nil {
		delete(c.strikes, seg)
	}
}

func (c *compactor) strike(seg uint64) {
	if c == nil {
		return
	}
	if c.strikes == nil {
		c.strikes = map[uint64]int{}
	}
	if c.strikes[seg]++; c.strikes[seg] >= compactStrikes {
		c.f.lg.Printf("compact: segment %s left by %d passes in a row; not tried again until the next mount", blocks.SegmentID(seg), c.strikes[seg])
		c.refuse(seg)
	}
}
