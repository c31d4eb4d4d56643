package fs

// Room "cache" (doc.go, "Rooms"): the write-back cache (wcache, each
// volume's volCache) and, in journal.go, the fsync journal. It owns the
// cache's locks (wcache.mu, volCache.mu, volCache.flushMu) and the
// journal's (jmu shared by a record on its way, jvmu), and calls only
// store.

import (
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

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
//   - the volume is fsynced (only that volume: commitVolume), and the
//     background commit once the oldest cached write is DirtyExpire old
//     (the host's vm.dirty_expire_centisecs, 30 s, as for a plain file's
//     dirty pages; commitDue, backgroundCommit); a crash keeps, per volume,
//     what its last fsync covered and, block by block, any later write
//     that reached the log (docs/write-cache.md, "Per-volume fsync");
//   - a global commit: snapshot create/delete/rollback, clone, compaction,
//     unmount. It holds every write made before it, whatever the volume;
//     Commit freezes what is cached as its generation and flushes it while
//     writes go on into a new one, until anything else changes a tree
//     (fold); see commitWith;
//   - the tree must hold everything written: copy_file_range, SEEK_DATA
//     and SEEK_HOLE (the volume), describe and df (all);
//   - the cache holds more than half its size (then the largest volumes
//     are flushed in the background), or is full (then a writer flushes its
//     own volume before it adds more).
//
// Correctness rests on three rules:
//   - Reads look in the cache before the tree, newest generation first. A
//     flush maps a block in the tree before it forgets the block's cached
//     copy, so a read either finds the block cached or finds the tree
//     already pointing at it. A flush of the new generation drops the
//     frozen copies of its blocks first, so no flush maps an older copy
//     over a newer one.
//   - A flush works in steps of flushBatch blocks, each under the volume's
//     writer lock held shared (writes go on beside it, into the cache) and
//     the volume's flush mutex. What changes a volume's blocks other than a
//     cached write (punch, truncate, share) holds the writer lock
//     exclusively, so no flush step is half done under it, and drops or
//     replaces the cached blocks it covers.
//   - A write that is not cached (cache full; the data dir's disk nearly
//     full, so that ENOSPC is reported by the write as before; or a folded
//     commit window is flushing the cache, so that the flush ends and the
//     commit holds a prefix of every writer's writes) goes to the log
//     directly under the flush mutex, and drops the cached copies (of both
//     generations) it supersedes.
//
// Cached blocks live in page slots of 2 MiB anonymous mappings outside the
// Go heap (the garbage collector neither scans nor paces on them). A slab
// whose every slot is free holds nothing dirty: it is handed to the kernel
// with MADV_FREE at once (reclaimable under memory pressure, reused
// without a fault while there is none), and unmapped when memory pressure
// is reported (mempressure.go) or nothing was written for trimAfter.

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
	// free has a bit set per free page slot of a mapped slab; nfree counts
	// them. alloc hands slots out in address order from cursor on (next
	// fit), so that a write's blocks land in consecutive slots: copies into
	// scattered 4 KiB slots ran at a third of the speed of copies into
	// consecutive ones (9 vs 25 GB/s here).
	free   []uint64
	nfree  int
	cursor int // word of free to look at first
	used   atomic.Int64
	mapped atomic.Int64 // pages in mapped slabs
	// slabUsed counts the slots in use per slab; state says what a slab
	// with none in use is: slabLive, being given to the kernel by release
	// (slabAdvising: its slots are out of the free bitmap, so no writer
	// takes one before the MADV_FREE is done; trim leaves it mapped), or
	// given (slabLazy). lazy counts the pages of slabLazy slabs.
	slabUsed []int32
	state    []uint8
	lazy     atomic.Int64

	// pressureUntil (unix nanoseconds): memory pressure was reported
	// (mempressure.go), and until then the cache's effective size is
	// limit/pressureShrink; pressed asks the background flusher to write
	// everything out, commit and unmap free slabs.
	pressureUntil atomic.Int64
	pressed       atomic.Bool

	kick    chan struct{}
	lastPut atomic.Int64 // unix nanoseconds of the last put
	// dirtySince (unix nanoseconds) is when the first block cached since
	// the last freeze or full flush was put: how old the oldest write the
	// next commit would write out is (0: unknown, treated as old).
	dirtySince atomic.Int64
	committing atomic.Bool // a commit is flushing: writes go to the log
	// gen: a commit's window is open in generation mode: it froze what was
	// cached (volCache.frozen) and flushes that, while cached writes go on
	// into a new generation (dirty). See commitWith and fold.
	gen atomic.Bool
	// frozenHook, when set (tests), runs in a generation-mode commit right
	// after the freeze, before the frozen blocks are flushed; passHook in
	// flushVolume between its two passes.
	frozenHook, passHook func()

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
	c.free = make([]uint64, len(c.slabs)*cacheSlabPages/64)
	c.slabUsed = make([]int32, len(c.slabs))
	c.state = make([]uint8, len(c.slabs))
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
	if !c.growLocked(n) {
		return nil
	}
	out := make([]uint32, 0, n)
	for w := c.cursor; len(out) < n; w = (w + 1) % len(c.free) {
		for c.free[w] != 0 && len(out) < n {
			b := bits.TrailingZeros64(c.free[w])
			c.free[w] &^= 1 << b
			out = append(out, uint32(w*64+b))
			i := w * 64 / cacheSlabPages
			if c.slabUsed[i]++; c.state[i] == slabLazy {
				// Written again from now on: the kernel keeps a lazily
				// freed page once it is written (no fault unless it was
				// reclaimed meanwhile; then a zero page is faulted in,
				// and the slot is written whole before it is read).
				c.state[i] = slabLive
				c.lazy.Add(-cacheSlabPages)
			}
		}
		c.cursor = w
	}
	c.nfree -= n
	c.used.Add(int64(n))
	return out
}

// prefault makes sure, as far as the size allows, that n page slots are
// free, before a writer takes its volume's cache lock: mapping a slab
// takes milliseconds on a virtual machine (fs/wcache.go mapSlab), and the
// volume's readers would wait for it.
func (c *wcache) prefault(n int) {
	if c.used.Load()+int64(n) <= c.mapped.Load() {
		return // enough free, as far as a glance tells
	}
	c.mu.Lock()
	c.growLocked(n)
	c.mu.Unlock()
}

// growLocked maps slabs until n slots are free, or says it cannot. New
// slabs are mapped and faulted in with c.mu released, so that writers,
// readers and flush steps do not queue behind it; c.mu is held again on
// return.
func (c *wcache) growLocked(n int) bool {
	for c.nfree < n {
		i := slices.IndexFunc(c.slabs, func(s []byte) bool { return s == nil })
		if i < 0 {
			return false
		}
		c.slabs[i] = reservedSlab
		c.mu.Unlock()
		mem := mapSlab()
		c.mu.Lock()
		if mem == nil {
			c.slabs[i] = nil
			return false
		}
		c.slabs[i] = mem
		c.state[i] = slabLive
		c.mapped.Add(cacheSlabPages)
		for w := i * cacheSlabPages / 64; w < (i+1)*cacheSlabPages/64; w++ {
			c.free[w] = ^uint64(0)
		}
		c.nfree += cacheSlabPages
	}
	return true
}

// reservedSlab marks a slab being mapped by growLocked (not nil, so no
// other caller takes its index; empty, so trim leaves it alone).
var reservedSlab = []byte{}

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

// What a slab whose slots are all free is (wcache.state).
const (
	slabLive     = iota // mapped, its pages dirty anonymous memory
	slabAdvising        // release is handing it to the kernel
	slabLazy            // MADV_FREE'd: reclaimable until written again
)

// unmapRange unmaps part of a mapping (syscall.Munmap takes only whole
// mappings it made).
func unmapRange(b []byte) {
	syscall.Syscall(syscall.SYS_MUNMAP, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0)
}

// release frees page slots whose blocks are forgotten (flushed, dropped,
// superseded). A slab left with no slot in use holds nothing dirty: it is
// given to the kernel with MADV_FREE, so that its memory counts as
// reclaimable (LazyFree) instead of pinned anonymous memory, as the page
// cache's clean pages are. Whole slabs only: a MADV_FREE of part of a huge
// page splits it, and writes into the split slab then cost 2.7 ms per
// 2 MiB instead of 22 us (page faults; measured here). The madvise runs
// without c.mu (15 us per slab of huge pages, 70 us in 4 KiB pages): the
// slab's slots are taken out of the free bitmap meanwhile, so no writer
// can fill a slot the MADV_FREE would then throw away.
func (c *wcache) release(slots []uint32) {
	if len(slots) == 0 {
		return
	}
	var idle []int
	c.mu.Lock()
	for _, slot := range slots {
		bit := uint64(1) << (slot % 64)
		if c.free[slot/64]&bit != 0 {
			// Two owners of one slot would mix two blocks' data.
			panic("fs: write cache: a page slot was freed twice")
		}
		c.free[slot/64] |= bit
		i := int(slot / cacheSlabPages)
		if c.slabUsed[i]--; c.slabUsed[i] == 0 {
			idle = append(idle, i)
		}
	}
	c.nfree += len(slots)
	c.used.Add(-int64(len(slots)))
	var advise [][]byte
	for _, i := range idle {
		c.state[i] = slabAdvising
		c.setFree(i, false)
		advise = append(advise, c.slabs[i])
	}
	c.mu.Unlock()
	if len(advise) == 0 {
		return
	}
	for _, s := range advise {
		_ = unix.Madvise(s, unix.MADV_FREE) // an old kernel (< 4.5): the slab stays as it is
	}
	c.mu.Lock()
	for _, i := range idle {
		if c.state[i] == slabAdvising {
			c.state[i] = slabLazy
			c.setFree(i, true)
			c.lazy.Add(cacheSlabPages)
		}
	}
	c.mu.Unlock()
}

// setFree puts the slots of slab i, none of them in use, in the free bitmap
// or takes them out. Caller holds c.mu.
func (c *wcache) setFree(i int, free bool) {
	var w uint64
	if free {
		w = ^uint64(0)
		c.nfree += cacheSlabPages
	} else {
		c.nfree -= cacheSlabPages
	}
	for k := i * cacheSlabPages / 64; k < (i+1)*cacheSlabPages/64; k++ {
		c.free[k] = w
	}
}

// expired says whether the oldest block cached since the last commit's
// freeze (or full flush) was put at least d ago.
func (c *wcache) expired(d time.Duration) bool {
	since := c.dirtySince.Load()
	return since == 0 || time.Since(time.Unix(0, since)) >= d
}

// trim unmaps every slab with no slot in use (the background flusher
// calls it when nothing was written for trimAfter, and under memory
// pressure; Close): memory a burst of writes took goes back to the system
// at once, not only when the kernel gets round to reclaiming it. No reader
// holds a free slot (reads copy under the volume's cache lock, while the
// slot is in its map). The unmaps run without c.mu. It returns the pages
// unmapped.
func (c *wcache) trim() int64 {
	var gone [][]byte
	c.mu.Lock()
	for i, s := range c.slabs {
		if len(s) == 0 || c.slabUsed[i] != 0 || c.state[i] == slabAdvising {
			continue
		}
		if c.state[i] == slabLazy {
			c.lazy.Add(-cacheSlabPages)
		}
		c.setFree(i, false)
		c.slabs[i] = nil
		c.state[i] = slabLive
		c.mapped.Add(-cacheSlabPages)
		gone = append(gone, s)
	}
	c.mu.Unlock()
	for _, s := range gone {
		unmapRange(s)
	}
	return int64(len(gone)) * cacheSlabPages
}

// full says whether n more pages would take the cache past its size (its
// lowered size under memory pressure).
func (c *wcache) full(n int) bool { return c.used.Load()+int64(n) > c.size() }

// pressureShrink: under memory pressure the cache holds at most this
// fraction of its size (and the background flusher starts at half that).
const pressureShrink = 8

// size is the cache's effective size in pages: its limit, or a part of it
// while memory pressure lasts.
func (c *wcache) size() int64 {
	if c.underPressure() {
		return max(c.limit/pressureShrink, cacheSlabPages)
	}
	return c.limit
}

// bgSize is the size above which the background flusher writes out the
// largest volumes.
func (c *wcache) bgSize() int64 {
	if c.underPressure() {
		return c.size() / 2
	}
	return c.bg
}

func (c *wcache) underPressure() bool {
	until := c.pressureUntil.Load()
	return until != 0 && time.Now().UnixNano() < until
}

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
	dirty    slotMap      // written since the last flush step began (or the last freeze)
	frozen   slotMap      // the open commit's generation, older than dirty (commitWith)
	flushing slotMap      // taken by the flush step in progress, still read from here
	n        atomic.Int64 // blocks in dirty, frozen and flushing

	// puts counts the blocks cached since the volume's cache last emptied;
	// at an fsync, Fsync compares it with what is still cached (judge).
	puts atomic.Int64
	// throughUntil (unix nanoseconds): until then the volume's writes go to
	// the log directly, because caching them coalesced nothing.
	throughUntil atomic.Int64
	// sinceSync counts the blocks written to the volume (cached or not)
	// since its last fsync: an fsync after only a few ends write-through
	// (Fsync), so that the next ones can be journal records.
	sinceSync atomic.Int64

	// flushMu is held by a flush step, by a write that goes to the log
	// directly, and by the deletion of the volume.
	flushMu sync.Mutex
	deleted bool // under flushMu: the volume is gone, drop what is cached

	j volJournal // the fsync journal's state (fs/journal.go), under mu
}

func (v *volCache) count() {
	v.n.Store(int64(v.dirty.n + v.frozen.n + v.flushing.n))
}

// put caches whole blocks from block first on. false: the cache has no
// room; nothing was cached.
func (v *volCache) put(c *wcache, first uint64, data []byte) bool {
	n := len(data) / BlockSize
	c.prefault(n)
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
	now := time.Now().UnixNano()
	c.lastPut.Store(now)
	if c.dirtySince.Load() == 0 {
		c.dirtySince.CompareAndSwap(0, now)
	}
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
	v.jwrite(first, n)
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
	return v.readLocked(c, first, dst)
}

// readLocked is read with v.mu held (either way).
func (v *volCache) readLocked(c *wcache, first uint64, dst []byte) []bool {
	var filled []bool
	n := len(dst) / BlockSize
	// Newest first: dirty, then the frozen generation, then a flush step's
	// blocks (frozen and flushing never hold the same block: a step takes
	// its blocks out of frozen, or out of dirty dropping their frozen
	// copies).
	var rd, rz, rf *slotRun
	for i := range n {
		b := first + uint64(i)
		if i == 0 || b%runBlocks == 0 {
			rd, rz, rf = v.dirty.run(b, false), v.frozen.run(b, false), v.flushing.run(b, false)
		}
		var s uint32
		if rd != nil {
			s = rd.s[b%runBlocks]
		}
		if s == 0 && rz != nil {
			s = rz.s[b%runBlocks]
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

// drop forgets the cached blocks in [from, to), of both generations. The
// caller holds the flush mutex or the writer lock exclusively, so no flush
// step is in progress.
func (v *volCache) drop(c *wcache, from, to uint64) {
	if v.n.Load() == 0 || from >= to {
		return
	}
	v.mu.Lock()
	slots := v.dirty.dropRange(from, to, nil)
	slots = v.frozen.dropRange(from, to, slots)
	v.count()
	v.mu.Unlock()
	c.release(slots)
}

// dropRange deletes the blocks in [from, to) and appends their slots.
func (m *slotMap) dropRange(from, to uint64, slots []uint32) []uint32 {
	if m.n == 0 {
		return slots
	}
	if (to-from)/runBlocks+1 < uint64(len(m.runs)) {
		for b := from; b < to; b++ {
			if s, ok := m.del(b); ok {
				slots = append(slots, s)
			}
		}
		return slots
	}
	for _, b := range m.blocks() {
		if b >= from && b < to {
			s, _ := m.del(b)
			slots = append(slots, s)
		}
	}
	return slots
}

// freeze makes what the volume has cached the open commit's generation.
// Called with the state lock held exclusively: no flush step is in
// progress and frozen is empty (a commit empties it or, failing, unfreezes).
func (v *volCache) freeze() {
	v.mu.Lock()
	v.frozen, v.dirty = v.dirty, slotMap{}
	v.mu.Unlock()
}

// unfreeze gives a failed commit's generation back to dirty, under newer
// copies. Called with the state lock held exclusively.
func (v *volCache) unfreeze(c *wcache) {
	v.mu.Lock()
	var free []uint32
	for _, b := range v.frozen.blocks() {
		s, _ := v.frozen.del(b)
		if _, newer := v.dirty.get(b); newer {
			free = append(free, s)
		} else {
			v.dirty.set(b, s)
		}
	}
	v.count()
	v.mu.Unlock()
	c.release(free)
}

// blocksOf returns the block numbers of the frozen generation or of dirty,
// in order.
func (v *volCache) blocksOf(frozen bool) []uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if frozen {
		return v.frozen.blocks()
	}
	return v.dirty.blocks()
}

// storeBlocks writes whole blocks of a volume from block first on: into
// the cache when it is on and has room, else to the log and the tree.
// Caller holds the volume's writer lock and the state read lock.
func (f *FS) storeBlocks(ino, first uint64, data []byte, cache bool) error {
	v := f.vol(ino)
	v.c.sinceSync.Add(int64(len(data) / BlockSize))
	if cache && f.wc.on() && !f.wc.committing.Load() && time.Now().UnixNano() >= v.c.throughUntil.Load() &&
		!f.wc.lowSpace(f.log.Space) && v.c.put(f.wc, first, data) {
		return nil
	}
	f.fold() // a change to the tree
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

// fold is called, with the state read lock held, before anything changes
// a tree while a commit's window is open in generation mode (anything but
// a cached write within a volume's size): from then on the window is an
// ordinary commit's, which flushes every cached block of both generations
// and lets writes go to the log meanwhile. Otherwise the commit would
// capture this change without the cached writes made before it.
func (f *FS) fold() {
	if f.wc.gen.Load() {
		f.wc.committing.Store(true)
	}
}

// lockState takes the state read lock for a change that is not a cached
// write (a namespace operation): an open window in generation mode folds.
func (f *FS) lockState() {
	f.state.RLock()
	f.fold()
}

// flushGeneration opens a commit's window in generation mode: under the
// state lock (no write in flight) every volume's cached blocks become the
// frozen generation, then they are flushed step by step beside the
// writers, who cache into a new one. A failure closes the window.
func (f *FS) flushGeneration() error {
	f.state.Lock()
	vols := f.cachedVolumes()
	for _, v := range vols {
		v.c.freeze()
	}
	marks := f.journalMarks() // the frozen flush covers every record so far
	f.wc.dirtySince.Store(0)  // what is cached from here on is the new generation
	f.wc.gen.Store(true)
	f.state.Unlock()
	if f.wc.frozenHook != nil {
		f.wc.frozenHook()
	}
	for ino, v := range vols {
		if err := f.flushOf(ino, v, true, true); err != nil {
			f.endWindow(err)
			return err
		}
	}
	journalCover(marks)
	return nil
}

// endWindow closes a commit's window; after a failure the frozen
// generation is given back to dirty, under newer copies.
func (f *FS) endWindow(err error) {
	f.state.Lock()
	f.endWindowLocked(err)
	f.state.Unlock()
}

// endWindowLocked is endWindow with the state lock held exclusively.
func (f *FS) endWindowLocked(err error) {
	if err != nil {
		for _, v := range f.cachedVolumes() {
			v.c.unfreeze(f.wc)
		}
		f.wc.dirtySince.Store(0) // the frozen blocks are back: as old as can be
	}
	f.wc.gen.Store(false)
	f.wc.committing.Store(false)
}

// flushVolume writes every block of the volume cached when it is called to
// the log and the tree (not durably: Commit does that). A failure leaves
// the blocks cached, and is returned.
func (f *FS) flushVolume(ino uint64) error {
	v := f.vol(ino)
	// Every block cached now is in the tree when this returns nil: so are
	// the blocks of every journal record handed out so far.
	mark := v.c.jmark()
	if v.c.n.Load() == 0 {
		v.c.jcover(mark)
		return nil
	}
	// dirty first: a commit's freeze may move blocks from dirty to frozen
	// at any moment (never the other way), so blocks listed in dirty and
	// frozen before it are found in frozen after it. (A frozen generation
	// is flushed whole before the next freeze.) A dirty block's flush drops
	// its older frozen copy.
	for _, frozen := range []bool{false, true} {
		if err := f.flushOf(ino, v, frozen, false); err != nil {
			return err
		}
		if !frozen && f.wc.passHook != nil {
			f.wc.passHook()
		}
	}
	// Blocks taken by a flush step in progress elsewhere: it holds flushMu
	// until they are in the tree.
	v.c.flushMu.Lock()
	v.c.flushMu.Unlock()
	v.c.jcover(mark)
	return nil
}

// flushOf flushes the blocks of one generation of a volume, in steps. own:
// the open commit flushing its own generation (no fold).
func (f *FS) flushOf(ino uint64, v *volume, frozen, own bool) error {
	bs := v.c.blocksOf(frozen)
	for len(bs) > 0 {
		k := min(len(bs), flushBatch)
		if err := f.flushStep(ino, v, bs[:k], frozen, own); err != nil {
			return err
		}
		bs = bs[k:]
	}
	return nil
}

// flushStep moves the given blocks of a generation (in order) to the log
// and maps them; blocks no longer there are skipped.
func (f *FS) flushStep(ino uint64, v *volume, bs []uint64, frozen, own bool) error {
	v.wmu.RLock()
	defer v.wmu.RUnlock()
	f.state.RLock()
	defer f.state.RUnlock()
	if !own {
		f.fold()
	}
	v.c.flushMu.Lock()
	defer v.c.flushMu.Unlock()
	return f.flushTaken(ino, &v.c, bs, frozen)
}

// flushLocked flushes what is cached, with the state lock held exclusively
// by the caller (commitWith): no write is in flight, so the trees then
// hold exactly the writes made so far. all: both generations; else only
// what is left of the frozen one. No flush mutex is held by anyone else
// then (each is taken under the state read lock).
func (f *FS) flushLocked(all bool) error {
	for ino, v := range f.cachedVolumes() {
		v.c.flushMu.Lock()
		err := f.flushTaken(ino, &v.c, nil, true)
		if err == nil && all {
			err = f.flushTaken(ino, &v.c, nil, false)
		}
		v.c.flushMu.Unlock()
		if err != nil {
			return err
		}
	}
	if all {
		// Every cache is empty under the state lock: the trees hold every
		// record handed out.
		journalCover(f.journalMarks())
	}
	return nil
}

// flushTaken moves the blocks bs (in order; nil: all) of a generation to
// the flushing map, writes them and forgets them, or on failure puts them
// back. Blocks taken from dirty drop their frozen copies, which they
// supersede (so a flush never maps an older copy over a newer one). The
// caller holds c.flushMu and the state lock (either way).
func (f *FS) flushTaken(ino uint64, c *volCache, bs []uint64, frozen bool) error {
	c.mu.Lock()
	if c.deleted {
		c.mu.Unlock()
		return nil
	}
	src := &c.dirty
	if frozen {
		src = &c.frozen
	}
	if bs == nil {
		bs = src.blocks()
	}
	taken := bs[:0:0]
	var stale []uint32
	for _, b := range bs {
		if s, ok := src.del(b); ok {
			c.flushing.set(b, s)
			taken = append(taken, b)
			if !frozen {
				if old, ok := c.frozen.del(b); ok {
					stale = append(stale, old)
				}
			}
		}
	}
	c.count()
	c.mu.Unlock()
	f.wc.release(stale)

	err := f.writeFlushing(ino, c, taken)

	c.mu.Lock()
	var free []uint32
	for _, b := range taken {
		s, _ := c.flushing.del(b)
		// Only dirty can have gained a newer copy meanwhile: frozen takes
		// blocks only at a freeze, under the state lock, which this step
		// holds shared.
		if _, newer := c.dirty.get(b); newer || err == nil {
			free = append(free, s)
		} else {
			src.set(b, s) // keep it for the next flush
		}
	}
	c.count()
	if c.dirty.n == 0 && c.frozen.n == 0 {
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
