package blocks

import (
	"sync"
	"sync/atomic"
)

// readerCache keeps a bounded number of segment files open for reading.
// A data dir can hold tens of thousands of segments (64 MiB each), and
// keeping one descriptor per segment ever read ran the process out of
// descriptors, which it shares with Pebble. Eviction is CLOCK: a lookup
// marks its entry used (under the read lock, so lookups of different
// segments proceed together); an insertion over the bound closes entries
// that are neither used since the last sweep nor being read.
type readerCache struct {
	store Store
	max   int

	mu   sync.RWMutex
	m    map[SegmentID]*reader
	hand []SegmentID // clock order (insertion); stale ids are skipped
}

type reader struct {
	f      SegmentFile
	refs   atomic.Int32 // reads in progress (taken under mu.RLock or mu.Lock)
	used   atomic.Bool  // read since the clock hand last passed
	doomed atomic.Bool  // out of the cache: the last reader closes it
	once   sync.Once
}

func (r *reader) close() { r.once.Do(func() { r.f.Close() }) }

func (c *readerCache) init(store Store, max int) {
	c.store, c.max, c.m = store, max, map[SegmentID]*reader{}
}

// get returns an open reader of id with a reference the caller gives back
// with put.
func (c *readerCache) get(id SegmentID) (*reader, error) {
	c.mu.RLock()
	r := c.m[id]
	if r != nil {
		r.refs.Add(1)
		r.used.Store(true)
	}
	c.mu.RUnlock()
	if r != nil {
		return r, nil
	}
	f, err := c.store.Open(id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r = c.m[id]; r != nil { // opened meanwhile by another reader
		f.Close()
	} else {
		r = &reader{f: f}
		c.m[id] = r
		c.hand = append(c.hand, id)
		c.evictLocked()
	}
	r.refs.Add(1)
	r.used.Store(true)
	return r, nil
}

func (c *readerCache) put(r *reader) {
	if r.refs.Add(-1) == 0 && r.doomed.Load() {
		r.close()
	}
}

// evictLocked closes entries until at most max are open, sparing the ones
// in use (the bound is exceeded only while more than max segments are
// being read at once). Caller holds mu.
func (c *readerCache) evictLocked() {
	for pass := 0; len(c.m) > c.max && pass < 2*len(c.hand)+1; pass++ {
		id := c.hand[0]
		c.hand = c.hand[1:]
		r := c.m[id]
		if r == nil {
			continue
		}
		if r.used.Swap(false) || r.refs.Load() > 0 {
			c.hand = append(c.hand, id)
			continue
		}
		delete(c.m, id)
		c.retire(r)
	}
	if len(c.hand) > 4*c.max { // drop stale ids
		live := c.hand[:0]
		for _, id := range c.hand {
			if c.m[id] != nil {
				live = append(live, id)
			}
		}
		c.hand = live
	}
}

// retire closes r once no read uses it. Caller holds mu (no new reference
// can be taken).
func (c *readerCache) retire(r *reader) {
	r.doomed.Store(true)
	if r.refs.Load() == 0 {
		r.close()
	}
}

// drop closes the reader of a removed segment.
func (c *readerCache) drop(id SegmentID) {
	c.mu.Lock()
	if r := c.m[id]; r != nil {
		delete(c.m, id)
		c.retire(r)
	}
	c.mu.Unlock()
}

func (c *readerCache) closeAll() {
	c.mu.Lock()
	for id, r := range c.m {
		delete(c.m, id)
		c.retire(r)
	}
	c.hand = nil
	c.mu.Unlock()
}

// open reports how many readers are open (tests).
func (c *readerCache) open() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
