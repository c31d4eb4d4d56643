package blocks

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// LogConfig configures a Log.
type LogConfig struct {
	Host          uint32 // this host's id, the top bits of every SegmentID it makes
	NextSeq       uint64 // the next sequence number must be at least this (persisted by the caller)
	SegmentBlocks uint32 // records per segment before it is sealed; default 16384 (64 MiB of data)
}

// Extent is a run of consecutive records in one segment.
type Extent struct {
	Seg   SegmentID
	Index uint32
	N     uint32
}

// Log appends blocks to the host's open segment and reads them back with
// verification. A new segment is started at every open, so records that an
// earlier process wrote but never committed are never overwritten while a
// commit could still reference them; such orphans are garbage the caller
// removes once no tree references the segment.
//
// Sealed segments are immutable. A Log is safe for concurrent use.
type Log struct {
	store Store
	cfg   LogConfig

	mu       sync.Mutex
	open     SegmentFile
	openID   SegmentID
	next     uint32
	dirty    bool
	unsynced []SegmentFile // sealed since the last Sync, synced and closed by it
	nextSeq  uint64
	closed   bool
	reserve  uint64
	free     int64 // estimated free bytes, refreshed from the store
	freeAt   time.Time

	rmu     sync.RWMutex
	readers map[SegmentID]SegmentFile
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
	l := &Log{store: store, cfg: cfg, nextSeq: max(cfg.NextSeq, 1), readers: map[SegmentID]SegmentFile{}}
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

// IsOpen reports whether id is the segment currently appended to.
func (l *Log) IsOpen(id SegmentID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open != nil && l.openID == id
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
	if time.Since(l.freeAt) > 200*time.Millisecond || l.free-need < int64(l.reserve)+(64<<20) {
		_, free, err := l.store.Space()
		if err != nil {
			return fmt.Errorf("blocks: store space: %w", err)
		}
		l.free, l.freeAt = int64(free), time.Now()
	}
	if l.free-need < int64(l.reserve) {
		return ErrNoSpace
	}
	l.free -= need
	return nil
}

// Append writes len(data)/BlockSize blocks for volume vol starting at block
// first and returns where they went, in order (more than one extent when a
// segment fills). len(data) must be a multiple of BlockSize. The blocks are
// durable only after Sync.
func (l *Log) Append(vol, first uint64, data []byte) ([]Extent, error) {
	if len(data)%BlockSize != 0 || len(data) == 0 {
		return nil, fmt.Errorf("blocks: append of %d bytes is not a whole number of blocks", len(data))
	}
	n := uint32(len(data) / BlockSize)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if err := l.checkSpace(int64(n) * RecordSize); err != nil {
		return nil, err
	}
	var exts []Extent
	for done := uint32(0); done < n; {
		if l.open == nil || l.next >= l.cfg.SegmentBlocks {
			if err := l.roll(); err != nil {
				return nil, err
			}
		}
		k := min(n-done, l.cfg.SegmentBlocks-l.next)
		bp := getBuf(int(k) * RecordSize)
		buf := *bp
		for i := uint32(0); i < k; i++ {
			blk := done + i
			encodeRecord(buf[int(i)*RecordSize:], l.openID, l.next+i, Tag{Volume: vol, Block: first + uint64(blk)},
				data[int(blk)*BlockSize:int(blk+1)*BlockSize])
		}
		_, err := l.open.WriteAt(buf, RecordOffset(l.next))
		putBuf(bp)
		if err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return nil, fmt.Errorf("%w: %w", ErrNoSpace, err)
			}
			return nil, fmt.Errorf("blocks: append to segment %s: %w", l.openID, err)
		}
		exts = append(exts, Extent{Seg: l.openID, Index: l.next, N: k})
		l.next += k
		l.dirty = true
		done += k
	}
	return exts, nil
}

// roll seals the open segment (it is synced and closed by the next Sync) and
// starts a new one.
func (l *Log) roll() error {
	id := MakeSegmentID(l.cfg.Host, l.nextSeq)
	f, err := l.store.Create(id)
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return fmt.Errorf("%w: %w", ErrNoSpace, err)
		}
		return fmt.Errorf("blocks: create segment %s: %w", id, err)
	}
	if _, err := f.WriteAt(encodeSegHeader(id), 0); err != nil {
		f.Close()
		l.store.Remove(id)
		if errors.Is(err, syscall.ENOSPC) {
			return fmt.Errorf("%w: %w", ErrNoSpace, err)
		}
		return fmt.Errorf("blocks: write segment header %s: %w", id, err)
	}
	l.nextSeq++
	if l.open != nil {
		l.unsynced = append(l.unsynced, l.open)
	}
	l.open, l.openID, l.next, l.dirty = f, id, 0, true
	return nil
}

// Sync makes every Append that returned before it was called durable.
func (l *Log) Sync() error {
	l.mu.Lock()
	files := l.unsynced
	l.unsynced = nil
	var open SegmentFile
	if l.dirty && l.open != nil {
		open = l.open
		l.dirty = false
	}
	l.mu.Unlock()
	for i, f := range files {
		if err := f.Sync(); err != nil {
			l.mu.Lock()
			l.unsynced = append(l.unsynced, files[i:]...)
			l.dirty = l.dirty || open != nil
			l.mu.Unlock()
			return fmt.Errorf("blocks: sync sealed segment: %w", err)
		}
		f.Close()
	}
	if open != nil {
		if err := open.Sync(); err != nil {
			l.mu.Lock()
			l.dirty = true
			l.mu.Unlock()
			return fmt.Errorf("blocks: sync open segment: %w", err)
		}
	}
	return nil
}

func (l *Log) reader(id SegmentID) (SegmentFile, error) {
	l.rmu.RLock()
	f := l.readers[id]
	l.rmu.RUnlock()
	if f != nil {
		return f, nil
	}
	l.rmu.Lock()
	defer l.rmu.Unlock()
	if f = l.readers[id]; f != nil {
		return f, nil
	}
	f, err := l.store.Open(id)
	if err != nil {
		return nil, err
	}
	l.readers[id] = f
	return f, nil
}

// Read reads and verifies e.N blocks of extent e into dst (len e.N*BlockSize).
// A checksum failure returns a *CorruptError and leaves dst unspecified;
// the caller must not return dst as data.
func (l *Log) Read(e Extent, dst []byte) error {
	if len(dst) != int(e.N)*BlockSize {
		return fmt.Errorf("blocks: read buffer of %d bytes for %d blocks", len(dst), e.N)
	}
	f, err := l.reader(e.Seg)
	if err != nil {
		return fmt.Errorf("blocks: open segment %s: %w", e.Seg, err)
	}
	bp := getBuf(int(e.N) * RecordSize)
	defer putBuf(bp)
	buf := *bp
	n, err := f.ReadAt(buf, RecordOffset(e.Index))
	if n < len(buf) {
		if err == nil || isEOF(err) {
			return &CorruptError{Seg: e.Seg, Index: e.Index + uint32(n/RecordSize), Reason: "record beyond end of segment"}
		}
		return fmt.Errorf("blocks: read segment %s: %w", e.Seg, err)
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
	f, err := l.reader(seg)
	if err != nil {
		return nil, Tag{}, fmt.Errorf("blocks: open segment %s: %w", seg, err)
	}
	rec := make([]byte, RecordSize)
	n, err := f.ReadAt(rec, RecordOffset(idx))
	if n < RecordSize {
		if err == nil || isEOF(err) {
			return nil, Tag{}, &CorruptError{Seg: seg, Index: idx, Reason: "record beyond end of segment"}
		}
		return nil, Tag{}, fmt.Errorf("blocks: read segment %s: %w", seg, err)
	}
	return DecodeRecord(rec, seg, idx)
}

// Remove deletes a segment that no tree references any more. The open
// segment is never removed (it is still being appended to).
func (l *Log) Remove(id SegmentID) error {
	if l.IsOpen(id) {
		return nil
	}
	l.rmu.Lock()
	if f := l.readers[id]; f != nil {
		f.Close()
		delete(l.readers, id)
	}
	l.rmu.Unlock()
	return l.store.Remove(id)
}

// Close syncs and closes every file. The log cannot be used afterwards.
func (l *Log) Close() error {
	err := l.Sync()
	l.mu.Lock()
	l.closed = true
	if l.open != nil {
		l.open.Close()
		l.open = nil
	}
	l.mu.Unlock()
	l.rmu.Lock()
	for id, f := range l.readers {
		f.Close()
		delete(l.readers, id)
	}
	l.rmu.Unlock()
	return err
}
