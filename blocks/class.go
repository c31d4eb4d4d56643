package blocks

import (
	"fmt"
	"sync"
)

// Class is a segment's placement class (docs/format.md, "Segments"): where
// its blocks must live and what a sync of them promises (DESIGN.md,
// per-volume tiers). Every record of a segment is in the segment's class,
// recorded in its header, so a segment found on any member says how to
// treat it without asking the metadata. A Log keeps one open segment per
// class; compaction copies a block into a segment of the class it was in.
//
// Today every volume is ClassReplicated (the zero value, and what every
// segment written before classes existed reads as); the other values are
// fixed here so that the format does not change when they are given a
// meaning.
type Class uint8

const (
	// ClassReplicated is the default: blocks go to R members, and a sync
	// waits for them (cluster layer 1).
	ClassReplicated Class = 0
	// ClassWriteback: a sync is local, the upload follows with a bounded
	// lag (journals; Triple-L's Log-Split).
	ClassWriteback Class = 1
	// ClassLocal: blocks never leave the host (swap; Local-Swap).
	ClassLocal Class = 2

	// NumClasses is one more than the highest class a segment header may
	// carry; a header with a higher one is refused.
	NumClasses = 3
)

func (c Class) String() string {
	switch c {
	case ClassReplicated:
		return "replicated"
	case ClassWriteback:
		return "writeback"
	case ClassLocal:
		return "local"
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

func (c Class) valid() error {
	if c >= NumClasses {
		return fmt.Errorf("blocks: unsupported segment class %d", uint8(c))
	}
	return nil
}

// classCache remembers the class of segments: set when the Log creates
// one, read from the header the first time an older one is asked about
// (a segment's class never changes, so an entry is never stale; Remove
// drops it).
type classCache struct {
	mu sync.Mutex
	m  map[SegmentID]Class
}

func (cc *classCache) get(id SegmentID) (Class, bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	c, ok := cc.m[id]
	return c, ok
}

func (cc *classCache) set(id SegmentID, c Class) {
	cc.mu.Lock()
	if cc.m == nil {
		cc.m = map[SegmentID]Class{}
	}
	cc.m[id] = c
	cc.mu.Unlock()
}

func (cc *classCache) drop(id SegmentID) {
	cc.mu.Lock()
	delete(cc.m, id)
	cc.mu.Unlock()
}

// SegmentClass returns the class of a segment, from its header (verified
// like every header: magic, version, checksum, and that it names id). A
// header that fails is an error, never a guess: compaction refuses such a
// segment rather than move its blocks to a class they may not belong in.
func (l *Log) SegmentClass(id SegmentID) (Class, error) {
	if c, ok := l.classes.get(id); ok {
		return c, nil
	}
	r, err := l.readers.get(id)
	if err != nil {
		return 0, fmt.Errorf("blocks: open segment %s: %w", id, err)
	}
	var h [segHeaderUsed]byte
	n, err := r.f.ReadAt(h[:], 0)
	l.readers.put(r)
	if n < len(h) {
		if err == nil || isEOF(err) {
			return 0, fmt.Errorf("%w: segment %s: short header (%d bytes)", ErrChecksum, id, n)
		}
		return 0, fmt.Errorf("blocks: read segment %s header: %w", id, err)
	}
	got, c, err := DecodeSegHeader(h[:])
	if err != nil {
		return 0, fmt.Errorf("segment %s: %w", id, err)
	}
	if got != id {
		return 0, fmt.Errorf("%w: segment %s: header names segment %s", ErrChecksum, id, got)
	}
	l.classes.set(id, c)
	return c, nil
}
