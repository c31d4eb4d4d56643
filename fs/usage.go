package fs

// Room "space" (doc.go, "Rooms"; see compact.go).

import (
	"errors"
	"fmt"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/meta"
)

// defaultSegmentBlocks is blocks.Log's default segment size; it only sizes
// the walker's bitmaps (they grow for larger segments).
const defaultSegmentBlocks = 16384

func (f *FS) segmentBlocks() uint32 {
	if f.opts.SegmentBlocks != 0 {
		return f.opts.SegmentBlocks
	}
	return defaultSegmentBlocks
}

// liveRoots lists every tree root (heads and snapshots) of t: the live
// trees (compaction, which keeps them still or watches them change) or a
// committed view (describe, df).
func liveRoots(t *meta.Trees) ([]meta.Root, error) {
	roots, err := t.Roots()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return roots, nil
}

// walk marks every record the roots reach, in t.
func (f *FS) walk(t *meta.Trees, roots []meta.Root) (*meta.Live, error) {
	l, err := t.WalkLive(roots, f.segmentBlocks())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return l, nil
}

// segmentSize is the size of a stored segment file.
func (f *FS) segmentSize(id blocks.SegmentID) (int64, error) {
	sf, err := f.opts.Store.Open(id)
	if err != nil {
		return 0, err
	}
	defer sf.Close()
	return sf.Size()
}

// segmentRecords is how many whole records a segment file holds.
func segmentRecords(size int64) uint64 {
	if size <= blocks.SegHeaderSize {
		return 0
	}
	return uint64(size-blocks.SegHeaderSize) / blocks.RecordSize
}

// Describe reports a file's size, allocation, sharing, snapshots and origin.
//
// Unique counts the file's mapped blocks whose record no other root (no
// other file, no snapshot, its own included) reaches; SnapshotOnly counts
// the distinct records that only the file's own snapshots reach. Both come
// from walks of every tree (docs/compaction.md, "Live records") as
// committed at the call (view): no lock is held through them.
func (f *FS) Describe(ino uint64) (Description, error) {
	if err := f.regular(ino); err != nil {
		return Description{}, err
	}
	// Figures come from the trees, which must hold every written block
	// (shared and unique bytes need all of them, not only this volume's).
	if err := f.flushAll(); err != nil {
		return Description{}, err
	}
	in, err := f.inode(ino)
	if err != nil {
		return Description{}, err
	}
	snaps, err := f.Snapshots(ino)
	if err != nil {
		return Description{}, err
	}
	d := Description{Ino: ino, Snapshots: snaps, Origin: in.Origin}

	trees, done, err := f.view()
	if err != nil {
		return Description{}, err
	}
	defer done()
	h, err := trees.Head(ino)
	if err != nil {
		return Description{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	roots, err := liveRoots(trees)
	if err != nil {
		return Description{}, err
	}
	var others, own []meta.Root
	for _, r := range roots {
		switch {
		case r.Vol != ino:
			others = append(others, r)
		case r.Snap != 0:
			own = append(own, r)
		}
	}
	other, err := f.walk(trees, others)
	if err != nil {
		return Description{}, err
	}
	snap, err := f.walk(trees, own)
	if err != nil {
		return Description{}, err
	}
	head, err := f.walk(trees, []meta.Root{{Vol: ino, Head: h}})
	if err != nil {
		return Description{}, err
	}
	var unique uint64
	err = trees.WalkMapped(h, func(m meta.Mapping) {
		for i := uint64(0); i < m.N; i++ {
			idx := m.Idx + uint32(i)
			if !other.Has(m.Seg, idx) && !snap.Has(m.Seg, idx) {
				unique++
			}
		}
	})
	if err != nil {
		return Description{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	var snapOnly uint64
	for _, seg := range snap.Segments() {
		for _, idx := range snap.Indexes(seg) {
			if !head.Has(seg, idx) && !other.Has(seg, idx) {
				snapOnly++
			}
		}
	}
	d.Size = h.Size
	d.Allocated = h.Blocks * BlockSize
	d.Unique = unique * BlockSize
	d.Shared = d.Allocated - d.Unique
	d.SnapshotOnly = snapOnly * BlockSize
	return d, nil
}

// Usage reports logical, physical and shared bytes of the whole data dir.
//
// Logical and SnapshotLogical add up the blocks each head and snapshot
// maps; Physical counts each live record once (a walk of every tree);
// Stored is the sum of the segment files' sizes as the block store reports
// them (headers and dead records included: what compaction can give back
// is Stored - Physical, less the record headers).
func (f *FS) Usage() (Usage, error) {
	var u Usage
	if err := f.flushAll(); err != nil {
		return Usage{}, err
	}
	files, err := f.db.RegularFiles()
	if err != nil {
		return Usage{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	u.Files = files
	trees, done, err := f.view()
	if err != nil {
		return Usage{}, err
	}
	defer done()
	u.Snapshots = trees.SnapshotCount()
	roots, err := liveRoots(trees)
	if err != nil {
		return Usage{}, err
	}
	live, err := f.walk(trees, roots)
	if err != nil {
		return Usage{}, err
	}
	for _, r := range roots {
		if r.Snap == 0 {
			u.Logical += r.Head.Blocks * BlockSize
		} else {
			u.SnapshotLogical += r.Head.Blocks * BlockSize
		}
	}
	u.Physical = live.Total() * BlockSize
	u.Saved = u.Logical + u.SnapshotLogical - u.Physical
	ids, err := f.opts.Store.List()
	if err != nil {
		return Usage{}, fmt.Errorf("fs: list segments: %w", err)
	}
	for _, id := range ids {
		sz, err := f.segmentSize(id)
		if errors.Is(err, blocks.ErrNotFound) {
			continue // removed since the listing
		}
		if err != nil {
			return Usage{}, fmt.Errorf("fs: segment %s: %w", id, err)
		}
		u.Segments++
		u.Stored += uint64(sz)
	}
	u.Metadata = f.db.Usage()
	return u, nil
}

// view makes the trees durable (a commit, grouped with any under way) and
// opens them as committed then, from a Pebble snapshot: describe and df
// walk that, one consistent state, without the state lock, so no writer
// or commit waits for their walks (they used to hold the state lock
// exclusively through them). done releases the snapshot. viewHook (tests)
// runs once the view is taken.
func (f *FS) view() (*meta.Trees, func(), error) {
	if err := f.commitMeta(); err != nil {
		return nil, nil, err
	}
	v := f.db.View()
	trees, err := meta.OpenTrees(v)
	if err != nil {
		v.Close()
		return nil, nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if f.viewHook != nil {
		f.viewHook()
	}
	return trees, func() { v.Close() }, nil
}
