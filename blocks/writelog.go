package blocks

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// LogConfig configures a Log.
type LogConfig struct {
	Host          uint32 // this host's id, the top bits of every SegmentID it makes
	NextSeq       uint64 // the next sequence number must be at least this (persisted by the caller)
	SegmentBlocks uint32 // records per segment before it is sealed; default 16384 (64 MiB of data)
	// MaxOpenReaders bounds the segment files kept open for reading
	// (default 512): descriptors are shared with Pebble and the process
	// limit, and a data dir can hold tens of thousands of segments.
	MaxOpenReaders int
}

// Extent is a run of consecutive records in one segment.
type Extent struct {
	Seg   SegmentID
	Index uint32
	N     uint32
}

// DirectFile is a SegmentFile that can write around the page cache. The Log
// stages the records of such a file in memory, a chunk at a time, and
// writes whole chunks with WriteDirect; a store whose files are plain
// SegmentFiles gets every record written through at Append.
type DirectFile interface {
	SegmentFile
	// WriteDirect writes p at off. The address and length of p and off are
	// multiples of DirectAlign.
	WriteDirect(p []byte, off int64) (int, error)
	// Allocate reserves the bytes [off, off+n) on the medium (the file may
	// grow to off+n), so that a later write there neither fails for space
	// nor extends the file. Media that cannot preallocate return nil.
	Allocate(off, n int64) error
	// Truncate sets the file's size (Close drops the preallocated tail).
	Truncate(size int64) error
}

const (
	// DirectAlign is the alignment WriteDirect gets: address, length, offset.
	DirectAlign = 4096
	// ChunkRecords records are staged and written together. 512 records
	// are exactly 517 pages (512*4136 = 517*4096), so with the 4096-byte
	// segment header every chunk starts on a page boundary.
	ChunkRecords = 512
	chunkBytes   = ChunkRecords * RecordSize
	// maxChunks bounds the staged memory of a Log (16 x 2 MiB); an Append
	// that needs another chunk waits for a flush.
	maxChunks = 16
	flushers  = 4
)

// ChunkOffset is where chunk c of a segment starts (page aligned).
func ChunkOffset(c uint32) int64 { return SegHeaderSize + int64(c)*chunkBytes }

func alignUp(n int64) int64   { return (n + DirectAlign - 1) &^ (DirectAlign - 1) }
func alignDown(n int64) int64 { return n &^ (DirectAlign - 1) }

// alignedBuf returns n bytes (n a multiple of DirectAlign) at an aligned address.
func alignedBuf(n int) []byte {
	b := make([]byte, n+DirectAlign)
	off := int(-uintptr(unsafe.Pointer(&b[0])) & (DirectAlign - 1))
	return b[off : off+n : off+n]
}

// chunk stages records [first, first+n) of a direct segment. Appenders
// reserve slots under Log.mu, encode into buf without it, and mark them
// filled under it. A chunk whose n slots are filled is queued for a
// flusher; Sync writes the filled prefix of a partial one. Reads of its
// records are served from buf until it is written whole and dropped.
type chunk struct {
	seg      *openSeg
	c        uint32 // chunk number within the segment
	first, n uint32
	buf      []byte // alignUp(n*RecordSize) bytes, page aligned; the tail past n records is zero

	// under Log.mu
	reserved uint32 // slots handed out (relative to first)
	filled   [ChunkRecords / 64]uint64
	nfilled  uint32
	queued   bool
	failed   error // the last flush failed; Sync retries it

	wmu     sync.Mutex // serializes writes of buf to the file
	written uint32     // records [0, written) are in the file (under wmu)
	wroteTo int64      // bytes [0, wroteTo) of the chunk hold their final content (aligned; under wmu)

	rw sync.RWMutex // readers of buf (R) against its recycling (W)
}

func (ch *chunk) prefixFilled(k uint32) bool {
	for i := uint32(0); i < k; {
		w := ch.filled[i/64]
		if i%64 == 0 && k-i >= 64 {
			if w != ^uint64(0) {
				return false
			}
			i += 64
			continue
		}
		if w&(1<<(i%64)) == 0 {
			return false
		}
		i++
	}
	return true
}

// openSeg is a segment this Log has appended to and not yet synced and
// closed (a class's open one and sealed ones awaiting Sync).
type openSeg struct {
	id       SegmentID
	class    Class
	f        SegmentFile
	df       DirectFile // nil: records are written through at Append
	cur      *chunk     // the chunk being reserved into
	chunks   map[uint32]*chunk
	allocTo  int64 // bytes [0, allocTo) are preallocated
	inflight int   // write-through appends that reserved and have not written yet
	draining bool  // a Sync waits for inflight to reach 0: new write-through appends wait
	sealed   bool
	next     uint32 // the next record index to reserve (under Log.mu)
	dirty    bool   // reserved into since the last Sync took it (under Log.mu)
}

// Log appends blocks to the host's open segments, one per placement Class,
// and reads them back with verification. Each class's segments hold only
// that class's blocks (the class is in the segment header); the classes
// share the staging memory, the flushers, the sequence of segment ids and
// Sync, which covers every open segment. A new segment is started for a
// class at its first append after every open, so records that an earlier
// process wrote but never committed are never overwritten while a commit
// could still reference them; such orphans are garbage the caller removes
// once no tree references the segment.
//
// On a DirectFile store, records are staged in page-aligned chunks of
// ChunkRecords (docs/format.md, "Segments"): full chunks are written by
// background flushers with WriteDirect into preallocated space, Sync writes
// the filled prefix of each partial chunk and then syncs the files. Slots are
// reserved under the lock and encoded outside it, so concurrent appends
// overlap.
//
// Sealed segments are immutable. A Log is safe for concurrent use.
type Log struct {
	store Store
	cfg   LogConfig

	mu       sync.Mutex
	cond     *sync.Cond           // signalled when a slot is filled, a chunk is freed or a write-through append ends
	open     [NumClasses]*openSeg // the segment each class appends to; nil before its first append
	seq      uint64               // bumped by every reservation and roll: what a Sync must cover
	unsynced []*openSeg           // sealed since the last Sync, synced and closed by it
	names    uint64               // segments created (for NameSyncer stores)
	segs     map[SegmentID]*openSeg
	staged   atomic.Pointer[map[SegmentID]bool] // the ids in segs, for reads without l.mu
	nchunks  int
	flushq   chan *chunk
	flushWG  sync.WaitGroup
	flushErr error // a background chunk write failed; the next append or Sync writes the chunk again
	broken   error // a sync failed: nothing since can be trusted durable; every Sync and Append fails
	nextSeq  uint64
	closed   bool
	reserve  uint64
	freeB    int64 // estimated free bytes, refreshed from the store
	freeAt   time.Time

	nameMu      sync.Mutex // serializes syncNames
	namesSynced uint64     // names [0, namesSynced) are durable (under nameMu)

	syncMu    sync.Mutex // serializes Syncs; a waiting one returns at once if the last covered it
	syncedSeq uint64     // every reservation up to this seq is durable (under syncMu)

	readers readerCache
	classes classCache

	sizeMu sync.Mutex
	sizes  map[SegmentID]int64 // bytes each segment file holds (or has preallocated)
	stored int64               // their sum
}

var recPool = sync.Pool{New: func() any { b := make([]byte, 0, 64*RecordSize); return &b }}

func getBuf(n int) *[]byte {
	p := recPool.Get().(*[]byte)
	if cap(*p) < n {
		b := make([]byte, n)
		p = &b
	}
	*p = (*p)[:n]
	return p
}

func putBuf(p *[]byte) {
	if cap(*p) <= 300*RecordSize {
		recPool.Put(p)
	}
}

// OpenLog opens the write log over store. It lists the store so that no
// sequence number of this host is reused.
func OpenLog(store Store, cfg LogConfig) (*Log, error) {
	if cfg.SegmentBlocks == 0 {
		cfg.SegmentBlocks = 16384
	}
	if cfg.MaxOpenReaders <= 0 {
		cfg.MaxOpenReaders = 512
	}
	l := &Log{store: store, cfg: cfg, nextSeq: max(cfg.NextSeq, 1), segs: map[SegmentID]*openSeg{}}
	l.publishStaged()
	l.readers.init(store, cfg.MaxOpenReaders)
	l.cond = sync.NewCond(&l.mu)
	ids, err := store.List()
	if err != nil {
		return nil, fmt.Errorf("blocks: list segments: %w", err)
	}
	for _, id := range ids {
		if id.Host() == cfg.Host&0xffffff && id.Seq() >= l.nextSeq {
			l.nextSeq = id.Seq() + 1
		}
	}
	total, _, err := store.Space()
	if err != nil {
		return nil, fmt.Errorf("blocks: store space: %w", err)
	}
	l.reserve = ReserveFor(total)
	// What the segments take on the medium, kept up to date from here on:
	// statfs reports it as vafs's used space.
	l.sizes = make(map[SegmentID]int64, len(ids))
	for _, id := range ids {
		f, err := store.Open(id)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return nil, fmt.Errorf("blocks: open segment %s: %w", id, err)
		}
		size, err := f.Size()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("blocks: size of segment %s: %w", id, err)
		}
		l.setSize(id, size)
	}
	return l, nil
}

// ReserveFor is how many bytes of a medium of size total are kept free for
// metadata: 2%, at least 16 MiB, at most 1 GiB.
func ReserveFor(total uint64) uint64 {
	return min(max(total/50, 16<<20), 1<<30)
}

// NextSeq is the sequence number the next segment will get; callers persist
// it with their commits.
func (l *Log) NextSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nextSeq
}

// IsOpen reports whether id is a segment currently appended to (the open
// segment of some class).
func (l *Log) IsOpen(id SegmentID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.open {
		if s != nil && s.id == id {
			return true
		}
	}
	return false
}

// Space is the store's capacity and the bytes still free for blocks (free
// less the metadata reserve).
func (l *Log) Space() (total, avail uint64, err error) {
	total, free, err := l.store.Space()
	if err != nil {
		return 0, 0, err
	}
	if free > l.reserve {
		avail = free - l.reserve
	}
	return total, avail, nil
}

func (l *Log) checkSpace(need int64) error {
	if time.Since(l.freeAt) > 200*time.Millisecond || l.freeB-need < int64(l.reserve)+(64<<20) {
		_, free, err := l.store.Space()
		if err != nil {
			return fmt.Errorf("blocks: store space: %w", err)
		}
		l.freeB, l.freeAt = int64(free), time.Now()
	}
	if l.freeB-need < int64(l.reserve) {
		return ErrNoSpace
	}
	l.freeB -= need
	return nil
}

func spaceErr(what string, id SegmentID, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %s %s: %w", ErrNoSpace, what, id, err)
	}
	return fmt.Errorf("blocks: %s %s: %w", what, id, err)
}

// Append writes len(data)/BlockSize blocks for volume vol starting at block
// first to class c's open segment and returns where they went, in order
// (more than one extent when a segment fills). len(data) must be a
// multiple of BlockSize. The blocks are durable only after Sync.
func (l *Log) Append(c Class, vol, first uint64, data []byte) ([]Extent, error) {
	if len(data)%BlockSize != 0 || len(data) == 0 {
		return nil, fmt.Errorf("blocks: append of %d bytes is not a whole number of blocks", len(data))
	}
	return l.AppendBlocks(c, vol, first, len(data)/BlockSize, func(i int) []byte { return data[i*BlockSize : (i+1)*BlockSize] })
}

// AppendBlocks is Append of n blocks that need not be contiguous in
// memory: block(i) returns the BlockSize bytes of block first+i (the
// write-back cache appends from its page slots without gathering them).
func (l *Log) AppendBlocks(c Class, vol, first uint64, n0 int, block func(i int) []byte) ([]Extent, error) {
	if n0 <= 0 {
		return nil, fmt.Errorf("blocks: append of %d blocks", n0)
	}
	if err := c.valid(); err != nil {
		return nil, err
	}
	n := uint32(n0)
	var exts []Extent
	l.mu.Lock()
	if l.flushErr != nil {
		l.mu.Unlock()
		if err := l.rewriteFailed(); err != nil {
			return nil, err
		}
		l.mu.Lock()
	}
	if err := l.appendable(); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	if err := l.checkSpace(int64(n) * RecordSize); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	for done := uint32(0); done < n; {
		// l.mu is held here.
		if err := l.appendable(); err != nil {
			l.mu.Unlock()
			return nil, err
		}
		if s := l.open[c]; s == nil || s.next >= l.cfg.SegmentBlocks {
			if err := l.roll(c); err != nil {
				l.mu.Unlock()
				return nil, err
			}
		}
		s := l.open[c]
		k := min(n-done, l.cfg.SegmentBlocks-s.next)
		var ch *chunk
		if s.df != nil {
			if s.cur == nil || s.next >= s.cur.first+s.cur.n {
				if l.nchunks >= maxChunks {
					if l.flushErr != nil {
						// A failed chunk holds its buffer until it is
						// written: write it now rather than wait forever.
						l.mu.Unlock()
						if err := l.rewriteFailed(); err != nil {
							return nil, err
						}
						l.mu.Lock()
						continue
					}
					l.cond.Wait() // a flush frees a buffer; the state is re-checked
					continue
				}
				if err := l.newChunk(s); err != nil {
					l.mu.Unlock()
					return nil, err
				}
			}
			ch = s.cur
			k = min(k, ch.first+ch.n-s.next)
			ch.reserved += k
		} else {
			if s.draining {
				l.cond.Wait() // a Sync is waiting for the writes in flight
				continue
			}
			s.inflight++
		}
		idx := s.next
		s.next += k
		s.dirty = true
		l.seq++
		l.mu.Unlock()

		from := int(done)
		src := func(i int) []byte { return block(from + i) }
		tag := Tag{Volume: vol, Block: first + uint64(done)}
		var err error
		if ch != nil {
			encodeRecords(ch.buf[int(idx-ch.first)*RecordSize:], s.id, idx, tag, int(k), src)
		} else {
			bp := getBuf(int(k) * RecordSize)
			encodeRecords(*bp, s.id, idx, tag, int(k), src)
			_, err = s.f.WriteAt(*bp, RecordOffset(idx))
			l.growSize(s.id, RecordOffset(idx+k))
			putBuf(bp)
		}

		l.mu.Lock()
		if ch != nil {
			l.fill(ch, idx-ch.first, k)
		} else {
			s.inflight--
			if s.inflight == 0 {
				l.cond.Broadcast()
			}
		}
		if err != nil {
			l.mu.Unlock()
			return nil, spaceErr("append to segment", s.id, err)
		}
		exts = append(exts, Extent{Seg: s.id, Index: idx, N: k})
		done += k
	}
	l.mu.Unlock()
	return exts, nil
}

func (l *Log) appendable() error {
	if l.closed {
		return ErrClosed
	}
	return l.broken
}

// rewriteFailed writes again every chunk whose background write failed
// (its records are still in memory), so that one transient write error
// costs nothing: the append or Sync that finds it retries, and only if the
// retry fails too does that one call fail. Appends are not refused for an
// error they could fix: a commit appends (the write-back cache) before it
// syncs, so a sticky error would fail every commit after it, forever.
func (l *Log) rewriteFailed() error {
	l.mu.Lock()
	if l.flushErr == nil {
		l.mu.Unlock()
		return nil
	}
	failed := l.failedChunks()
	l.mu.Unlock()
	for _, ch := range failed {
		if err := l.writeChunk(ch, ch.n); err != nil {
			return noSpaceOr(err)
		}
		l.mu.Lock()
		ch.failed = nil
		l.mu.Unlock()
		l.dropChunk(ch)
	}
	l.mu.Lock()
	l.recomputeFlushErr()
	l.mu.Unlock()
	return nil
}

// failedChunks lists the chunks whose background write failed. Caller
// holds l.mu.
func (l *Log) failedChunks() []*chunk {
	var failed []*chunk
	for _, s := range l.segs {
		for _, ch := range s.chunks {
			if ch.failed != nil {
				failed = append(failed, ch)
			}
		}
	}
	return failed
}

// recomputeFlushErr sets flushErr to a failed chunk's error, or nil.
// Caller holds l.mu.
func (l *Log) recomputeFlushErr() {
	l.flushErr = nil
	if failed := l.failedChunks(); len(failed) > 0 {
		l.flushErr = failed[len(failed)-1].failed
	}
}

func noSpaceOr(err error) error {
	if errors.Is(err, syscall.ENOSPC) && !errors.Is(err, ErrNoSpace) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

func encodeRecords(dst []byte, seg SegmentID, idx uint32, tag Tag, n int, block func(i int) []byte) {
	for i := 0; i < n; i++ {
		encodeRecord(dst[i*RecordSize:], seg, idx+uint32(i), Tag{Volume: tag.Volume, Block: tag.Block + uint64(i)}, block(i))
	}
}

// newChunk starts the chunk that holds record s.next of s and preallocates
// its bytes in the file. Caller holds l.mu.
func (l *Log) newChunk(s *openSeg) error {
	c := s.next / ChunkRecords
	ch := &chunk{seg: s, c: c, first: c * ChunkRecords}
	ch.n = min(ChunkRecords, l.cfg.SegmentBlocks-ch.first)
	size := alignUp(int64(ch.n) * RecordSize)
	if end := ChunkOffset(c) + size; end > s.allocTo {
		// Preallocate the rest of the segment at once while space is
		// plentiful: fallocate waits for the file's direct writes in
		// flight, so one call per chunk would stall the flushers. Near the
		// reserve, allocate chunk by chunk so that ENOSPC comes no earlier.
		to := end
		if rest := alignUp(RecordOffset(l.cfg.SegmentBlocks)); l.freeB-(rest-s.allocTo) > int64(l.reserve)+(256<<20) {
			to = rest
		}
		if err := s.df.Allocate(s.allocTo, to-s.allocTo); err != nil {
			return spaceErr("allocate in segment", s.id, err)
		}
		s.allocTo = to
		l.growSize(s.id, to)
	}
	ch.buf = getChunkBuf()[:size]
	// A reused buffer holds old records: the tail past n records must read
	// as zeros in the file.
	clear(ch.buf[int64(ch.n)*RecordSize:])
	l.nchunks++
	s.cur = ch
	s.chunks[c] = ch
	if l.flushq == nil {
		l.flushq = make(chan *chunk, maxChunks)
		for range flushers {
			l.flushWG.Add(1)
			go l.flusher(l.flushq)
		}
	}
	return nil
}

// fill marks slots [from, from+k) of ch encoded and queues a full chunk.
// Caller holds l.mu.
func (l *Log) fill(ch *chunk, from, k uint32) {
	for i := from; i < from+k; i++ {
		ch.filled[i/64] |= 1 << (i % 64)
	}
	ch.nfilled += k
	if ch.nfilled == ch.n && !ch.queued && l.flushq != nil && !l.closed {
		ch.queued = true
		l.flushq <- ch // never blocks: capacity maxChunks >= live chunks
	}
	l.cond.Broadcast()
}

func (l *Log) flusher(q <-chan *chunk) {
	defer l.flushWG.Done()
	for ch := range q {
		err := l.writeChunk(ch, ch.n)
		l.mu.Lock()
		if err != nil {
			ch.failed = err
			if l.flushErr == nil {
				l.flushErr = err
			}
			l.cond.Broadcast()
			l.mu.Unlock()
			continue
		}
		l.mu.Unlock()
		l.dropChunk(ch)
	}
}

// dropChunk forgets a chunk written whole and recycles its buffer once no
// reader is copying from it.
func (l *Log) dropChunk(ch *chunk) {
	l.mu.Lock()
	if ch.seg.chunks[ch.c] != ch {
		l.mu.Unlock()
		return
	}
	delete(ch.seg.chunks, ch.c)
	if ch.seg.cur == ch {
		ch.seg.cur = nil
	}
	if len(ch.seg.chunks) == 0 && ch.seg.sealed {
		delete(l.segs, ch.seg.id)
		l.publishStaged()
	}
	l.nchunks--
	l.mu.Unlock()
	ch.rw.Lock()
	buf := ch.buf
	ch.buf = nil
	ch.rw.Unlock()
	putChunkBuf(buf)
	l.mu.Lock()
	l.cond.Broadcast()
	l.mu.Unlock()
}

// writeChunk writes records [0, upto) of ch (which must be filled) to the
// file, from the first page not yet written in its final form. A prefix
// that ends inside a page is written with that page completed by zeros, from
// a copy: the bytes after it may be being encoded. The page is written again
// later, with the same bytes for the records it already held.
func (l *Log) writeChunk(ch *chunk, upto uint32) error {
	ch.wmu.Lock()
	defer ch.wmu.Unlock()
	if ch.written >= upto {
		return nil
	}
	end := int64(upto) * RecordSize
	if upto == ch.n {
		end = int64(len(ch.buf)) // the zero tail of a short last chunk
	}
	base := ChunkOffset(ch.c)
	from, to := ch.wroteTo, alignDown(end)
	var err error
	switch {
	case end == to:
		_, err = ch.seg.df.WriteDirect(ch.buf[from:to], base+from)
	case end-from <= 256<<10:
		// A short prefix (frequent syncs): one write, from a copy whose
		// last page is completed by zeros.
		cp := alignedBuf(int(alignUp(end - from)))
		copy(cp, ch.buf[from:end])
		_, err = ch.seg.df.WriteDirect(cp, base+from)
	default:
		if to > from {
			_, err = ch.seg.df.WriteDirect(ch.buf[from:to], base+from)
		}
		if err == nil {
			page := alignedBuf(DirectAlign)
			copy(page, ch.buf[to:end])
			_, err = ch.seg.df.WriteDirect(page, base+to)
		}
	}
	if err != nil {
		return spaceErr("write segment", ch.seg.id, err)
	}
	ch.written, ch.wroteTo = upto, to
	return nil
}

// roll seals class c's open segment (it is synced and closed by the next
// Sync) and starts a new one of that class. Caller holds l.mu.
func (l *Log) roll(c Class) error {
	id := MakeSegmentID(l.cfg.Host, l.nextSeq)
	f, err := l.store.Create(id)
	if err != nil {
		return spaceErr("create segment", id, err)
	}
	s := &openSeg{id: id, class: c, f: f, chunks: map[uint32]*chunk{}, dirty: true}
	if df, ok := f.(DirectFile); ok {
		s.df = df
	}
	// The header goes through the page cache even on a DirectFile: a
	// direct write that extends an empty file took ~6 ms on a busy disk,
	// under l.mu. Its page is never written direct (chunk 0 starts at the
	// next page), and Sync's fdatasync makes it durable with the records.
	if _, err = f.WriteAt(encodeSegHeader(id, c), 0); err != nil {
		f.Close()
		l.store.Remove(id)
		return spaceErr("write segment header", id, err)
	}
	l.nextSeq++
	l.names++
	l.seq++
	if old := l.open[c]; old != nil {
		old.sealed = true
		old.cur = nil
		if len(old.chunks) == 0 {
			delete(l.segs, old.id)
		}
		l.unsynced = append(l.unsynced, old)
	}
	l.open[c] = s
	l.classes.set(id, c)
	l.setSize(id, SegHeaderSize)
	l.segs[id] = s
	l.publishStaged()
	return nil
}

type syncJob struct {
	ch     *chunk
	target uint32
}

// Sync makes every Append that returned before it was called durable: it
// waits until the slots reserved so far are encoded, writes every staged
// chunk up to there, and syncs the files. Concurrent Syncs are serialized;
// one that finds its appends covered by the Sync before it returns at once
// (group commit).
//
// A failed chunk write is retried by the next Sync (the records are in
// memory). A failed fdatasync (or directory fsync) is not: Linux reports a
// writeback error once and then answers 0, so records the failed sync
// covered may be lost while a later sync succeeds. The Log then refuses
// every Sync and Append (ErrSyncFailed, naming the segment): no commit can
// refer to those records, and the mount says so instead of going on.
func (l *Log) Sync() error {
	l.mu.Lock()
	my := l.seq
	l.mu.Unlock()
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	if err := l.broken; err != nil {
		l.mu.Unlock()
		return err
	}
	if l.syncedSeq >= my {
		l.mu.Unlock()
		return nil
	}
	upto := l.seq
	segs := l.unsynced
	l.unsynced = nil
	names := l.names
	// The open segment of every class appended to since the last Sync:
	// each gets its own fdatasync below, after the sealed ones.
	var open []*openSeg
	for _, s := range l.open {
		if s != nil && s.dirty {
			open = append(open, s)
			s.dirty = false
		}
	}
	all := append(segs[:len(segs):len(segs)], open...)
	var jobs []syncJob
	for _, s := range all {
		for _, ch := range s.chunks {
			jobs = append(jobs, syncJob{ch, ch.reserved})
		}
	}
	l.mu.Unlock()
	fail := func(err error) error {
		l.mu.Lock()
		l.unsynced = append(segs[:len(segs):len(segs)], l.unsynced...)
		for _, s := range open {
			s.dirty = true // sealed since or not, Sync must cover it again
		}
		l.mu.Unlock()
		return err
	}
	for _, j := range jobs {
		l.mu.Lock()
		for !j.ch.prefixFilled(j.target) {
			l.cond.Wait()
		}
		l.mu.Unlock()
		if err := l.writeChunk(j.ch, j.target); err != nil {
			return fail(noSpaceOr(fmt.Errorf("blocks: sync: %w", err)))
		}
		if j.target == j.ch.n {
			l.mu.Lock()
			if j.ch.failed != nil { // a flusher's write failed; this one did not
				j.ch.failed = nil
				l.recomputeFlushErr()
			}
			l.mu.Unlock()
			l.dropChunk(j.ch)
		}
	}
	// Wait out write-through appends that reserved before this Sync: a
	// sealed segment takes no new reservation, the open one holds new ones
	// back while it drains.
	l.mu.Lock()
	for _, s := range all {
		if s.df != nil {
			continue
		}
		s.draining = true
		for s.inflight > 0 {
			l.cond.Wait()
		}
		s.draining = false
		l.cond.Broadcast()
	}
	l.mu.Unlock()
	if err := l.syncNames(names); err != nil {
		return l.breakOn(err)
	}
	for _, s := range segs {
		if err := s.f.Sync(); err != nil {
			return l.breakOn(fmt.Errorf("sync of sealed segment %s: %w", s.id, err))
		}
		l.mu.Lock()
		delete(l.segs, s.id) // its chunks were all written and dropped above
		l.publishStaged()
		l.mu.Unlock()
		s.f.Close()
	}
	for _, s := range open {
		if err := s.f.Sync(); err != nil {
			return l.breakOn(fmt.Errorf("sync of open segment %s (%s): %w", s.id, s.class, err))
		}
	}
	l.syncedSeq = upto
	return nil
}

// breakOn records a failed sync: from now on every Sync and Append fails
// with it (see Sync). Caller holds syncMu.
func (l *Log) breakOn(err error) error {
	err = fmt.Errorf("%w: %w; records written since the last good sync may not be on disk, so nothing more is committed: unmount, check the disk, mount again", ErrSyncFailed, err)
	l.mu.Lock()
	if l.broken == nil {
		l.broken = err
	}
	err = l.broken
	l.cond.Broadcast()
	l.mu.Unlock()
	return err
}

// Broken returns the error that stopped the Log (a failed sync), or nil.
func (l *Log) Broken() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.broken
}

// syncNames makes the names of the first n segments this Log created
// durable, on a NameSyncer store. Concurrent Syncs share one SyncNames.
func (l *Log) syncNames(n uint64) error {
	ns, ok := l.store.(NameSyncer)
	if !ok {
		return nil
	}
	l.nameMu.Lock()
	defer l.nameMu.Unlock()
	if l.namesSynced >= n {
		return nil
	}
	l.mu.Lock()
	upto := l.names
	l.mu.Unlock()
	if err := ns.SyncNames(); err != nil {
		return fmt.Errorf("blocks: sync segment names: %w", err)
	}
	l.namesSynced = upto
	return nil
}

// readRaw fills buf (len n*RecordSize) with records [idx, idx+n) of seg as
// stored: from a staged chunk when it is still in memory, else from the file.
func (l *Log) readRaw(seg SegmentID, idx uint32, buf []byte) error {
	n := uint32(len(buf) / RecordSize)
	staged := (*l.staged.Load())[seg]
	for done := uint32(0); done < n; {
		i := idx + done
		k := n - done
		var ch *chunk
		if !staged {
			// Neither open nor awaiting Sync: the records are in the file.
			// Reads of sealed segments never take l.mu, so they do not wait
			// behind an append's segment roll or a Sync.
			if err := l.readFile(seg, i, buf[int(done)*RecordSize:]); err != nil {
				return err
			}
			return nil
		}
		l.mu.Lock()
		if s := l.segs[seg]; s != nil && s.df != nil {
			c := i / ChunkRecords
			k = min(k, (c+1)*ChunkRecords-i)
			if ch = s.chunks[c]; ch != nil {
				for j := i - ch.first; j < min(i+k, ch.first+ch.n)-ch.first; j++ {
					if ch.filled[j/64]&(1<<(j%64)) == 0 {
						l.mu.Unlock()
						return &CorruptError{Seg: seg, Index: ch.first + j, Reason: "record not written"}
					}
				}
				ch.rw.RLock()
			}
		}
		l.mu.Unlock()
		part := buf[int(done)*RecordSize : int(done+k)*RecordSize]
		if ch != nil {
			if ch.buf != nil && i+k <= ch.first+ch.n {
				copy(part, ch.buf[int(i-ch.first)*RecordSize:])
				ch.rw.RUnlock()
				done += k
				continue
			}
			ch.rw.RUnlock()
		}
		if err := l.readFile(seg, i, part); err != nil {
			return err
		}
		done += k
	}
	return nil
}

// readFile reads len(part)/RecordSize records from index i of seg's file.
func (l *Log) readFile(seg SegmentID, i uint32, part []byte) error {
	r, err := l.readers.get(seg)
	if err != nil {
		return fmt.Errorf("blocks: open segment %s: %w", seg, err)
	}
	got, err := r.f.ReadAt(part, RecordOffset(i))
	l.readers.put(r)
	if got < len(part) {
		if err == nil || isEOF(err) {
			return &CorruptError{Seg: seg, Index: i + uint32(got/RecordSize), Reason: "record beyond end of segment"}
		}
		return fmt.Errorf("blocks: read segment %s: %w", seg, err)
	}
	return nil
}

// publishStaged publishes the ids in l.segs for readRaw's lock-free check.
// A segment leaves l.segs only once all its records are in the file, so a
// reader that sees an older set at worst takes l.mu needlessly. Caller
// holds l.mu.
func (l *Log) publishStaged() {
	m := make(map[SegmentID]bool, len(l.segs))
	for id := range l.segs {
		m[id] = true
	}
	l.staged.Store(&m)
}

// Read reads and verifies e.N blocks of extent e into dst (len e.N*BlockSize).
// A checksum failure returns a *CorruptError and leaves dst unspecified;
// the caller must not return dst as data.
func (l *Log) Read(e Extent, dst []byte) error {
	if len(dst) != int(e.N)*BlockSize {
		return fmt.Errorf("blocks: read buffer of %d bytes for %d blocks", len(dst), e.N)
	}
	bp := getBuf(int(e.N) * RecordSize)
	defer putBuf(bp)
	buf := *bp
	if err := l.readRaw(e.Seg, e.Index, buf); err != nil {
		return err
	}
	for i := uint32(0); i < e.N; i++ {
		data, _, err := DecodeRecord(buf[int(i)*RecordSize:], e.Seg, e.Index+i)
		if err != nil {
			return err
		}
		copy(dst[int(i)*BlockSize:], data)
	}
	return nil
}

// ReadRecord reads one record and returns its data and tag (for scrubbing).
func (l *Log) ReadRecord(seg SegmentID, idx uint32) ([]byte, Tag, error) {
	rec := make([]byte, RecordSize)
	if err := l.readRaw(seg, idx, rec); err != nil {
		return nil, Tag{}, err
	}
	return DecodeRecord(rec, seg, idx)
}

// Remove deletes a segment that no tree references any more. The open
// segment is never removed (it is still being appended to).
func (l *Log) Remove(id SegmentID) error {
	if l.IsOpen(id) {
		return nil
	}
	l.readers.drop(id)
	if err := l.store.Remove(id); err != nil {
		return err
	}
	l.classes.drop(id)
	l.sizeMu.Lock()
	l.stored -= l.sizes[id]
	delete(l.sizes, id)
	l.sizeMu.Unlock()
	return nil
}

// Close syncs and closes every file. The log cannot be used afterwards.
func (l *Log) Close() error {
	err := l.Sync()
	l.mu.Lock()
	l.closed = true
	q := l.flushq
	l.flushq = nil
	l.mu.Unlock()
	if q != nil {
		close(q)
		l.flushWG.Wait()
	}
	l.mu.Lock()
	for c, s := range l.open {
		if s == nil {
			continue
		}
		if s.df != nil && err == nil && s.allocTo > RecordOffset(s.next) {
			// Give back the preallocated tail; every record is written.
			l.setSize(s.id, RecordOffset(s.next))
			if e := s.df.Truncate(RecordOffset(s.next)); e != nil && err == nil {
				err = fmt.Errorf("blocks: trim segment %s: %w", s.id, e)
			}
		}
		s.f.Close()
		l.open[c] = nil
	}
	for _, s := range l.unsynced {
		s.f.Close()
	}
	l.unsynced = nil
	l.mu.Unlock()
	l.readers.closeAll()
	return err
}

func (l *Log) setSize(id SegmentID, size int64) {
	l.sizeMu.Lock()
	l.stored += size - l.sizes[id]
	l.sizes[id] = size
	l.sizeMu.Unlock()
}

func (l *Log) growSize(id SegmentID, size int64) {
	l.sizeMu.Lock()
	if old := l.sizes[id]; size > old {
		l.stored += size - old
		l.sizes[id] = size
	}
	l.sizeMu.Unlock()
}

// Stored is how many bytes the segment files take (preallocated space
// included): what vafs stores for blocks.
func (l *Log) Stored() uint64 {
	l.sizeMu.Lock()
	defer l.sizeMu.Unlock()
	return uint64(max(l.stored, 0))
}
