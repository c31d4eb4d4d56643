package fs

import (
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/vafs/vafs/meta"
)

// The write-back cache holds written blocks in memory before they go to the
// block log, the way the kernel's page cache holds a plain file's, so that a
// VM overwriting the same blocks (a database's pages, a journal, a file
// being rewritten) costs memory copies until something asks for
// durability, instead of one appended record per write. Without it every
// overwrite is a new record in the log: a guest rewriting a 1 GiB file
// appends 1 GiB per pass, bound by the disk's sustained write rate, while
// a qcow2 image under qemu-storage-daemon is overwritten in the host page
// cache.
//
// What is cached is only the data of whole blocks; a volume's size and
// times change at once, as before. Written blocks reach the log and the
// tree ("flush") when:
//   - anything commits: fsync, snapshot create/delete/rollback, clone,
//     compaction, unmount, and the background commit every 5 s. Every
//     commit flushes the whole cache first, so a commit holds every write
//     made before it, whatever the volume (as ext4's data=ordered), and a
//     crash returns to the last commit as before: a SIGKILL of the mount
//     loses at most the last ~5 s of what was not fsynced, never a mix;
//   - the tree must hold everything written: copy_file_range, SEEK_DATA
//     and SEEK_HOLE (the volume), describe and df (all);
//   - the cache holds more than half its size (then the largest volumes
//     are flushed in the background), or is full (then a writer flushes its
//     own volume before it adds more).
//
// Correctness rests on three rules:
//   - Reads look in the cache before the tree. A flush maps a block in the
//     tree before it forgets the block's cached copy, so a read either
//     finds the block cached or finds the tree already pointing at it.
//   - A flush works in steps of flushBatch blocks, each under the volume's
//     writer lock held shared (writes go on beside it, into the cache) and
//     the volume's flush mutex. What changes a volume's blocks other than a
//     cached write (punch, truncate, share) holds the writer lock
//     exclusively, so no flush step is half done under it, and drops or
//     replaces the cached blocks it covers.
//   - A write that is not cached (cache full; the data dir's disk nearly
//     full, so that ENOSPC is reported by the write as before; or a commit
//     is flushing the cache, so that the flush ends and the commit holds a
//     prefix of every writer's writes) goes to the log directly under the
//     flush mutex, and drops the cached copies it supersedes.
//
// Cached blocks live in page slots of 2 MiB anonymous mappings outside the
// Go heap (the garbage collector neither scans nor paces on them); the
// mappings are given back once everything is flushed.

const (
	cacheSlabBytes = 2 << 20
	cacheSlabPages = cacheSlabBytes / BlockSize
	// flushBatch is the most blocks one flush step appends while it holds
	// the volume's flush mutex and the state read lock (16 MiB).
	flushBatch = 4096
	// cacheSlack is how far (in pages) concurrent writers may take the
	// cache past its size before a write goes to the log directly.
	cacheSlack = 32 * cacheSlabPages
	// lowSpaceMargin: when the disk's free space less what the cache holds
	// drops under this, writes go to the log directly, so that a full disk
	// fails the write with ENOSPC rather than a later flush.
	lowSpaceMargin = 512 << 20
	// trimAfter: the cache's memory goes back to the system once nothing
	// has been written for this long. Not sooner: first touches of memory
	// are dear on virtual machines (here about 8 s per GiB in 4 KiB pages,
	// 0.2-6 s in huge pages faulted in at once), and a VM's next burst of
	// writes would pay them again.
	trimAfter = 5 * time.Minute
)

// DefaultWriteCache is the cache size used when Options.WriteCache is 0:
// an eighth of the machine's memory, at least 64 MiB and at most 4 GiB.
func DefaultWriteCache() int64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 256 << 20
	}
	return min(max(int64(si.Totalram)*int64(si.Unit)/8, 64<<20), 4<<30)
}

type wcache struct {
	limit int64 // pages; 0: the cache is off
	bg    int64 // pages: above this the background flusher starts

	mu    sync.Mutex
	slabs [][]byte // fixed length; nil where not mapped
	free  []uint32 // free page slots
	used  atomic.Int64

	kick       chan struct{}
	lastPut    atomic.Int64 // unix nanoseconds of the last put
	committing atomic.Bool  // a commit is flushing: writes go to the log

	spaceMu   sync.Mutex
	spaceNext atomic.Int64 // unix nanoseconds: when free space is looked at again
	low       atomic.Bool
}

func newWCache(bytes int64) *wcache {
	c := &wcache{kick: make(chan struct{}, 1)}
	if bytes <= 0 {
		return c
	}
	c.limit = max(bytes/BlockSize, cacheSlabPages)
	c.bg = c.limit / 2
	c.slabs = make([][]byte, (c.limit+cacheSlack+cacheSlabPages-1)/cacheSlabPages)
	return c
}

func (c *wcache) on() bool { return c.limit > 0 }

func (c *wcache) page(slot uint32) []byte {
	s := c.slabs[slot/cacheSlabPages]
	off := int(slot%cacheSlabPages) * BlockSize
	return s[off : off+BlockSize : off+BlockSize]
}

// alloc returns n free page slots, or nil when the cache cannot hold them.
func (c *wcache) alloc(n int) []uint32 {
	if n == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.free) < n {
		i := slices.IndexFunc(c.slabs, func(s []byte) bool { return s == nil })
		if i < 0 {
			return nil
		}
		mem := mapSlab()
		if mem == nil {
			return nil
		}
		c.slabs[i] = mem
		for p := cacheSlabPages - 1; p >= 0; p-- {
			c.free = append(c.free, uint32(i*cacheSlabPages+p))
		}
	}
	out := slices.Clone(c.free[len(c.free)-n:])
	c.free = c.free[:len(c.free)-n]
	c.used.Add(int64(n))
	return out
}

// mapSlab maps a 2 MiB slab aligned to 2 MiB, asks for a transparent huge
// page and faults it in at once: on this kind of virtual machine a page
// fault costs microseconds, and 512 of them per 2 MiB written made cached
// writes slower than the disk.
func mapSlab() []byte {
	mem, err := syscall.Mmap(-1, 0, 2*cacheSlabBytes, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
	if err != nil {
		return nil
	}
	off := int(-uintptr(unsafe.Pointer(&mem[0])) & (cacheSlabBytes - 1))
	if off > 0 {
		unmapRange(mem[:off])
	}
	if end := off + cacheSlabBytes; end < len(mem) {
		unmapRange(mem[end:])
	}
	s := mem[off : off+cacheSlabBytes : off+cacheSlabBytes]
	_ = syscall.Madvise(s, madvHugepage)
	_ = syscall.Madvise(s, madvPopulateWrite)
	return s
}

const (
	madvHugepage      = 14 // MADV_HUGEPAGE, linux/mman.h
	madvPopulateWrite = 23 // MADV_POPULATE_WRITE (Linux 5.14)
)

// unmapRange unmaps part of a mapping (syscall.Munmap takes only whole
// mappings it made).
func unmapRange(b []byte) {
	syscall.Syscall(syscall.SYS_MUNMAP, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0)
}

func (c *wcache) release(slots []uint32) {
	if len(slots) == 0 {
		return
	}
	c.mu.Lock()
	c.free = append(c.free, slots...)
	c.used.Add(-int64(len(slots)))
	c.mu.Unlock()
}

// trim unmaps every slab once no page is in use (the background flusher
// calls it when nothing was written for trimAfter): memory a burst of
// writes took goes back to the system. No reader holds a slot then (reads copy
// under the volume's cache lock, while the slot is in its map).
func (c *wcache) trim() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.used.Load() != 0 {
		return
	}
	for i, s := range c.slabs {
		if s != nil {
			unmapRange(s)
			c.slabs[i] = nil
		}
	}
	c.free = nil
}

// full says whether n more pages would take the cache past its size.
func (c *wcache) full(n int) bool { return c.used.Load()+int64(n) > c.limit }

func (c *wcache) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// lowSpace says whether the disk is too full to cache writes; the answer
// is refreshed at most every 200 ms (writers in between only load it).
func (c *wcache) lowSpace(space func() (uint64, uint64, error)) bool {
	if time.Now().UnixNano() < c.spaceNext.Load() {
		return c.low.Load()
	}
	c.spaceMu.Lock()
	defer c.spaceMu.Unlock()
	if now := time.Now(); now.UnixNano() >= c.spaceNext.Load() {
		_, avail, err := space()
		c.low.Store(err != nil || int64(avail)-c.used.Load()*BlockSize < lowSpaceMargin)
		c.spaceNext.Store(now.Add(200 * time.Millisecond).UnixNano())
	}
	return c.low.Load()
}

// slotMap maps block numbers to page slots, in runs of runBlocks blocks:
// one map lookup per 2 MiB of a volume instead of one per block (a map of
// a quarter of a million blocks was a tenth of the mount's CPU time in
// 1 MiB writes).
type slotMap struct {
	runs map[uint64]*slotRun
	n    int
}

const runBlocks = 512

type slotRun struct {
	s [runBlocks]uint32 // page slot + 1; 0: not cached
	n int
}

func (m *slotMap) run(b uint64, create bool) *slotRun {
	r := m.runs[b/runBlocks]
	if r == nil && create {
		if m.runs == nil {
			m.runs = map[uint64]*slotRun{}
		}
		r = &slotRun{}
		m.runs[b/runBlocks] = r
	}
	return r
}

func (m *slotMap) get(b uint64) (uint32, bool) {
	if r := m.runs[b/runBlocks]; r != nil {
		if s := r.s[b%runBlocks]; s != 0 {
			return s - 1, true
		}
	}
	return 0, false
}

func (m *slotMap) set(b uint64, slot uint32) {
	r := m.run(b, true)
	if r.s[b%runBlocks] == 0 {
		r.n++
		m.n++
	}
	r.s[b%runBlocks] = slot + 1
}

func (m *slotMap) del(b uint64) (uint32, bool) {
	r := m.runs[b/runBlocks]
	if r == nil || r.s[b%runBlocks] == 0 {
		return 0, false
	}
	s := r.s[b%runBlocks] - 1
	r.s[b%runBlocks] = 0
	r.n--
	m.n--
	if r.n == 0 {
		delete(m.runs, b/runBlocks)
	}
	return s, true
}

// blocks returns the block numbers in order.
func (m *slotMap) blocks() []uint64 {
	keys := make([]uint64, 0, len(m.runs))
	for k := range m.runs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	bs := make([]uint64, 0, m.n)
	for _, k := range keys {
		r := m.runs[k]
		for i, s := range r.s {
			if s != 0 {
				bs = append(bs, k*runBlocks+uint64(i))
			}
		}
	}
	return bs
}

// volCache is one volume's cached blocks.
type volCache struct {
	mu       sync.RWMutex
	dirty    slotMap      // written since the last flush step began
	flushing slotMap      // taken by the flush step in progress, still read from here
	n        atomic.Int64 // blocks in dirty and flushing

	// puts counts the blocks cached since the volume's cache last emptied;
	// at an fsync, Fsync compares it with what is still cached (judge).
	puts atomic.Int64
	// throughUntil (unix nanoseconds): until then the volume's writes go to
	// the log directly, because caching them coalesced nothing.
	throughUntil atomic.Int64

	// flushMu is held by a flush step, by a write that goes to the log
	// directly, and by the deletion of the volume.
	flushMu sync.Mutex
	deleted bool // under flushMu: the volume is gone, drop what is cached
}

func (v *volCache) count() {
	v.n.Store(int64(v.dirty.n + v.flushing.n))
}

// put caches whole blocks from block first on. false: the cache has no
// room; nothing was cached.
func (v *volCache) put(c *wcache, first uint64, data []byte) bool {
	n := len(data) / BlockSize
	v.mu.Lock()
	defer v.mu.Unlock()
	need := 0
	var r *slotRun
	for i := range n {
		b := first + uint64(i)
		if r == nil || b%runBlocks == 0 {
			r = v.dirty.run(b, false)
		}
		if r == nil || r.s[b%runBlocks] == 0 {
			need++
		}
	}
	slots := c.alloc(need)
	if len(slots) < need {
		return false
	}
	c.lastPut.Store(time.Now().UnixNano())
	r = nil
	for i := range n {
		b := first + uint64(i)
		if r == nil || b%runBlocks == 0 {
			r = v.dirty.run(b, true)
		}
		s := r.s[b%runBlocks]
		if s == 0 {
			s = slots[0] + 1
			slots = slots[1:]
			r.s[b%runBlocks] = s
			r.n++
			v.dirty.n++
		}
		copy(c.page(s-1), data[i*BlockSize:(i+1)*BlockSize])
	}
	v.puts.Add(int64(n))
	v.count()
	return true
}

// read copies the cached blocks of [first, first+len(dst)/BlockSize) into
// dst and returns which ones it filled (nil: none).
func (v *volCache) read(c *wcache, first uint64, dst []byte) []bool {
	if v.n.Load() == 0 {
		return nil
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	var filled []bool
	n := len(dst) / BlockSize
	var rd, rf *slotRun
	for i := range n {
		b := first + uint64(i)
		if i == 0 || b%runBlocks == 0 {
			rd, rf = v.dirty.run(b, false), v.flushing.run(b, false)
		}
		var s uint32
		if rd != nil {
			s = rd.s[b%runBlocks]
		}
		if s == 0 && rf != nil {
			s = rf.s[b%runBlocks]
		}
		if s == 0 {
			continue
		}
		s--
		if filled == nil {
			filled = make([]bool, n)
		}
		filled[i] = true
		copy(dst[i*BlockSize:(i+1)*BlockSize], c.page(s))
	}
	return filled
}

// drop forgets the dirty blocks in [from, to). The caller holds the flush
// mutex or the writer lock exclusively, so no flush step is in progress.
func (v *volCache) drop(c *wcache, from, to uint64) {
	if v.n.Load() == 0 || from >= to {
		return
	}
	v.mu.Lock()
	var slots []uint32
	if (to-from)/runBlocks+1 < uint64(len(v.dirty.runs)) {
		for b := from; b < to; b++ {
			if s, ok := v.dirty.del(b); ok {
				slots = append(slots, s)
			}
		}
	} else {
		for _, b := range v.dirty.blocks() {
			if b >= from && b < to {
				s, _ := v.dirty.del(b)
				slots = append(slots, s)
			}
		}
	}
	v.count()
	v.mu.Unlock()
	c.release(slots)
}

// dirtyBlocks returns the dirty block numbers in order.
func (v *volCache) dirtyBlocks() []uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.dirty.blocks()
}

// storeBlocks writes whole blocks of a volume from block first on: into
// the cache when it is on and has room, else to the log and the tree.
// Caller holds the volume's writer lock and the state read lock.
func (f *FS) storeBlocks(ino, first uint64, data []byte) error {
	v := f.vol(ino)
	if f.wc.on() && !f.wc.committing.Load() && time.Now().UnixNano() >= v.c.throughUntil.Load() &&
		!f.wc.lowSpace(f.log.Space) && v.c.put(f.wc, first, data) {
		return nil
	}
	if v.c.n.Load() == 0 {
		// Nothing of the volume is cached or being flushed: no flush step
		// can map an older copy of these blocks after them (a block cached
		// from now on is written concurrently with this one), so writers
		// need not queue on flushMu.
		return f.putBlocks(ino, first, data)
	}
	v.c.flushMu.Lock()
	defer v.c.flushMu.Unlock()
	if err := f.putBlocks(ino, first, data); err != nil {
		return err
	}
	v.c.drop(f.wc, first, first+uint64(len(data)/BlockSize))
	return nil
}

// flushVolume writes every block of the volume cached when it is called to
// the log and the tree (not durably: Commit does that). A failure leaves
// the blocks cached, and is returned.
func (f *FS) flushVolume(ino uint64) error {
	v := f.vol(ino)
	if v.c.n.Load() == 0 {
		return nil
	}
	bs := v.c.dirtyBlocks()
	if len(bs) == 0 {
		// Everything is taken by a flush step in progress elsewhere; it
		// holds flushMu until its blocks are in the tree.
		v.c.flushMu.Lock()
		v.c.flushMu.Unlock()
	}
	for len(bs) > 0 {
		k := min(len(bs), flushBatch)
		if err := f.flushStep(ino, v, bs[:k]); err != nil {
			return err
		}
		bs = bs[k:]
	}
	return nil
}

// flushStep moves the given dirty blocks (in order) to the log and maps
// them; blocks no longer dirty are skipped.
func (f *FS) flushStep(ino uint64, v *volume, bs []uint64) error {
	v.wmu.RLock()
	defer v.wmu.RUnlock()
	f.state.RLock()
	defer f.state.RUnlock()
	v.c.flushMu.Lock()
	defer v.c.flushMu.Unlock()
	return f.flushTaken(ino, &v.c, bs)
}

// flushLocked flushes everything cached, with the state lock held
// exclusively by the caller (commitWith): no write is in flight, so the
// trees then hold exactly the writes made so far. No flush mutex is held
// by anyone else then (each is taken under the state read lock).
func (f *FS) flushLocked() error {
	for ino, v := range f.cachedVolumes() {
		v.c.flushMu.Lock()
		err := f.flushTaken(ino, &v.c, nil)
		v.c.flushMu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// flushTaken moves the dirty blocks bs (in order; nil: all) to the flushing
// map, writes them and forgets them, or on failure makes them dirty again.
// The caller holds c.flushMu and the state lock (either way).
func (f *FS) flushTaken(ino uint64, c *volCache, bs []uint64) error {
	c.mu.Lock()
	if c.deleted {
		c.mu.Unlock()
		return nil
	}
	if bs == nil {
		bs = c.dirty.blocks()
	}
	taken := bs[:0:0]
	for _, b := range bs {
		if s, ok := c.dirty.del(b); ok {
			c.flushing.set(b, s)
			taken = append(taken, b)
		}
	}
	c.mu.Unlock()

	err := f.writeFlushing(ino, c, taken)

	c.mu.Lock()
	var free []uint32
	for _, b := range taken {
		s, _ := c.flushing.del(b)
		if _, newer := c.dirty.get(b); newer || err == nil {
			free = append(free, s)
		} else {
			c.dirty.set(b, s) // keep it for the next flush
		}
	}
	c.count()
	if c.dirty.n == 0 {
		c.puts.Store(0)
	}
	c.mu.Unlock()
	f.wc.release(free)
	return err
}

// Write-through after an fsync that found nothing coalesced: a writer that
// syncs every few MiB of new data (a database log, fio --fdatasync) gains
// nothing from the cache and loses the overlap of its writes with the disk:
// each fsync then copies and appends all at once what could have been
// appended as it came (1M writes with an fdatasync per 64 MiB: 697 MiB/s
// written through, 520 cached). judgeMin is the least a judged interval
// must have cached; throughFor how long the verdict holds before the cache
// is tried again.
const (
	judgeMin   = 256 // blocks (1 MiB)
	throughFor = 10 * time.Second
)

// judge runs at an fsync of the volume, before the commit flushes it: if at
// least nine in ten of the blocks cached since the cache last emptied are
// still distinct (overwrites coalesced under 10%), the volume writes
// through for throughFor.
func (v *volCache) judge() {
	puts, cached := v.puts.Load(), v.n.Load()
	if puts >= judgeMin && cached*10 >= puts*9 {
		v.throughUntil.Store(time.Now().Add(throughFor).UnixNano())
	}
}

// writeFlushing appends the taken blocks, in runs of consecutive blocks,
// straight from their page slots, and maps them. The flushing map changes
// only under flushMu, which the caller holds, and a slot in it is not
// reused before the step ends.
func (f *FS) writeFlushing(ino uint64, c *volCache, taken []uint64) error {
	slots := make([]uint32, len(taken))
	c.mu.RLock()
	for k, b := range taken {
		slots[k], _ = c.flushing.get(b)
	}
	c.mu.RUnlock()
	for i := 0; i < len(taken); {
		j := i + 1
		for j < len(taken) && taken[j] == taken[j-1]+1 {
			j++
		}
		run := slots[i:j]
		if err := f.putBlocksFrom(ino, taken[i], j-i, func(k int) []byte { return f.wc.page(run[k]) }); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// cachedVolumes lists the volumes with cached blocks.
func (f *FS) cachedVolumes() map[uint64]*volume {
	f.vmu.Lock()
	defer f.vmu.Unlock()
	out := map[uint64]*volume{}
	for ino, v := range f.vols {
		if v.c.n.Load() > 0 {
			out[ino] = v
		}
	}
	return out
}

// flushAll flushes every volume; the first error is returned, after all
// were tried.
func (f *FS) flushAll() error {
	var first error
	for ino := range f.cachedVolumes() {
		if err := f.flushVolume(ino); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// deleteVolume deletes a volume's tree and forgets its cached blocks,
// under the volume's flush mutex, so that no flush step maps into it
// afterwards. Caller holds nsMu and the state read lock.
func (f *FS) deleteVolume(ino uint64) error {
	v := f.vol(ino)
	v.c.flushMu.Lock()
	defer v.c.flushMu.Unlock()
	if err := f.trees.DeleteVolume(ino); err != nil {
		return err
	}
	v.c.deleted = true
	v.c.drop(f.wc, 0, meta.MaxBlocks)
	return nil
}

// dirtyPages is how many blocks of ino are cached (an upper bound of what
// the tree does not count yet).
func (f *FS) dirtyPages(ino uint64) uint64 {
	f.vmu.Lock()
	v := f.vols[ino]
	f.vmu.Unlock()
	if v == nil {
		return 0
	}
	return uint64(v.c.n.Load())
}

// writeBack is the background flusher: while the cache holds more than
// half its size, the volumes with the most cached blocks are flushed (the
// background commit flushes everything every few seconds anyway).
func (f *FS) writeBack() {
	defer close(f.wbDone)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		case <-f.wc.kick:
		}
		if f.wc.used.Load() > f.wc.bg {
			vols := f.cachedVolumes()
			inos := make([]uint64, 0, len(vols))
			for ino := range vols {
				inos = append(inos, ino)
			}
			slices.SortFunc(inos, func(a, b uint64) int { return int(vols[b].c.n.Load() - vols[a].c.n.Load()) })
			for _, ino := range inos {
				if f.wc.used.Load() <= f.wc.bg/2 {
					break
				}
				if err := f.flushVolume(ino); err != nil {
					f.lg.Printf("write-back of volume %d: %v", ino, err)
				}
			}
		}
		if f.wc.used.Load() == 0 && time.Since(time.Unix(0, f.wc.lastPut.Load())) > trimAfter {
			f.wc.trim()
		}
	}
}
