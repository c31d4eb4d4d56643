package fs

// Room "volume" (doc.go, "Rooms"): the volume I/O API (read, write,
// truncate, fallocate, seek, copy_file_range, fsync). It owns each
// volume's writer lock (volume.wmu) and calls commit (fsync), cache (the
// write-back cache and the fsync journal) and store: a write goes
// WriteAt -> storeBlocks (cache) -> putBlocks (store) -> blocks.Log.

import (
	"errors"
	"fmt"
	"sync"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/meta"
)

// MaxSize is the largest volume: 2^40 blocks of 4 KiB (4 PiB).
const MaxSize = meta.MaxBlocks * BlockSize

var blockPool = sync.Pool{New: func() any { b := make([]byte, 0, 256*BlockSize); return &b }}

func getBlocks(n int) *[]byte {
	p := blockPool.Get().(*[]byte)
	if cap(*p) < n*BlockSize {
		b := make([]byte, n*BlockSize)
		p = &b
	}
	*p = (*p)[:n*BlockSize]
	return p
}

func putBlocks(p *[]byte) {
	if cap(*p) <= 512*BlockSize {
		blockPool.Put(p)
	}
}

// lockVolume takes what a change to a volume's blocks needs, in order: the
// volume's writer lock, exclusively (read-modify-write of partial blocks
// is atomic), and the state read lock (no commit captures a half-done
// change), and returns the head as it is under those locks. The change is
// to the tree: an open commit window in generation mode folds (fs/wcache.go).
func (f *FS) lockVolume(ino uint64) (meta.Head, func(), error) {
	return f.lockVolumeFor(ino, false, true)
}

// lockVolumeFor is lockVolume for writes: shared takes the writer lock
// shared (whole-block writes replace blocks without reading them, so they
// may run side by side: qemu and fio keep many in flight); !fold leaves
// folding to the caller, for a write that may only be cached.
func (f *FS) lockVolumeFor(ino uint64, shared, fold bool) (meta.Head, func(), error) {
	v := f.vol(ino)
	lock, unlockW := v.wmu.Lock, v.wmu.Unlock
	if shared {
		lock, unlockW = v.wmu.RLock, v.wmu.RUnlock
	}
	lock()
	f.state.RLock()
	if fold {
		f.fold()
	}
	unlock := func() {
		f.state.RUnlock()
		unlockW()
	}
	h, err := f.trees.Head(ino)
	if err != nil {
		unlock()
		return meta.Head{}, nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return h, unlock, nil
}

func (f *FS) regular(ino uint64) error {
	in, err := f.inode(ino)
	if err != nil {
		return err
	}
	if isDir(in.Mode) {
		return ErrIsDir
	}
	if !isReg(in.Mode) {
		return ErrInvalid
	}
	return nil
}

func (f *FS) readErr(ino uint64, err error) error {
	var ce *blocks.CorruptError
	if errors.As(err, &ce) {
		f.lg.Printf("CORRUPT: volume %d: %v", ino, err)
		corruptReads.Add(1)
	}
	return fmt.Errorf("fs: read volume %d: %w", ino, err)
}

// readBlocks fills dst (whole blocks from block first on) from the
// write-back cache and then a volume's tree: holes read as zeros, data is
// verified. The cache is read first: a flush maps a block in the tree
// before it leaves the cache (fs/wcache.go).
func (f *FS) readBlocks(ino, first uint64, dst []byte) error {
	n := uint64(len(dst) / BlockSize)
	filled := f.vol(ino).c.read(f.wc, first, dst)
	f.gcMu.RLock()
	defer f.gcMu.RUnlock()
	ms, err := f.trees.Lookup(ino, first, n)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if filled != nil {
		ms = unfilled(ms, first, filled)
	}
	return f.readMappings(ino, first, ms, dst)
}

// unfilled cuts from the mappings the blocks the cache filled.
func unfilled(ms []meta.Mapping, first uint64, filled []bool) []meta.Mapping {
	var out []meta.Mapping
	for _, m := range ms {
		for i := uint64(0); i < m.N; {
			if filled[m.Block+i-first] {
				i++
				continue
			}
			j := i + 1
			for j < m.N && !filled[m.Block+j-first] {
				j++
			}
			part := m
			part.Block, part.N = m.Block+i, j-i
			if m.Seg != 0 {
				part.Idx = m.Idx + uint32(i)
			}
			out = append(out, part)
			i = j
		}
	}
	return out
}

func (f *FS) readMappings(ino, first uint64, ms []meta.Mapping, dst []byte) error {
	for _, m := range ms {
		out := dst[(m.Block-first)*BlockSize : (m.Block-first+m.N)*BlockSize]
		if m.Seg == 0 {
			clear(out)
			continue
		}
		if err := f.log.Read(blocks.Extent{Seg: blocks.SegmentID(m.Seg), Index: m.Idx, N: uint32(m.N)}, out); err != nil {
			return f.readErr(ino, err)
		}
	}
	return nil
}

// ReadAt reads from a volume; past the end it returns fewer bytes.
func (f *FS) ReadAt(ino uint64, p []byte, off int64) (int, error) {
	h, err := f.trees.Head(ino)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return f.readClipped(h.Size, p, off, func(first uint64, dst []byte) error {
		return f.readBlocks(ino, first, dst)
	})
}

// readClipped reads [off, off+len(p)) of something size bytes long whose
// whole blocks read fills (from block first on), going through a block
// buffer only when the range is not block aligned.
func (f *FS) readClipped(size uint64, p []byte, off int64, read func(first uint64, dst []byte) error) (int, error) {
	if off < 0 {
		return 0, ErrInvalid
	}
	if uint64(off) >= size {
		return 0, nil
	}
	if rem := size - uint64(off); uint64(len(p)) > rem {
		p = p[:rem]
	}
	if len(p) == 0 {
		return 0, nil
	}
	first := uint64(off) / BlockSize
	end := uint64(off) + uint64(len(p))
	last := (end - 1) / BlockSize
	if uint64(off)%BlockSize == 0 && end%BlockSize == 0 {
		return len(p), read(first, p)
	}
	bp := getBlocks(int(last - first + 1))
	defer putBlocks(bp)
	if err := read(first, *bp); err != nil {
		return 0, err
	}
	return copy(p, (*bp)[uint64(off)%BlockSize:]), nil
}

// WriteAt writes to a volume, extending it as needed. Partial blocks are
// read, merged and written whole; every write goes to a new place.
func (f *FS) WriteAt(ino uint64, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, ErrInvalid
	}
	if len(p) == 0 {
		return 0, nil
	}
	end := uint64(off) + uint64(len(p))
	if end > MaxSize {
		return 0, ErrTooBig
	}
	aligned := uint64(off)%BlockSize == 0 && end%BlockSize == 0
	if err := f.makeRoom(ino, len(p)); err != nil {
		return 0, err
	}
	h, unlock, err := f.lockVolumeFor(ino, aligned, false)
	if err != nil {
		return 0, err
	}
	defer unlock()
	cache := true
	if end > h.Size {
		f.fold() // the size changes with the tree's head
		// An extending write is not cached: the size is in the tree at
		// once, and a commit of the trees (another volume's fsync) must
		// never hold a size whose data is still only in memory.
		cache = false
	}
	first := uint64(off) / BlockSize
	last := (end - 1) / BlockSize
	data := p
	if !aligned {
		bp := getBlocks(int(last - first + 1))
		defer putBlocks(bp)
		data = *bp
		if uint64(off)%BlockSize != 0 {
			if err := f.readBlocks(ino, first, data[:BlockSize]); err != nil {
				return 0, err
			}
		}
		if end%BlockSize != 0 && (last != first || uint64(off)%BlockSize == 0) {
			if err := f.readBlocks(ino, last, data[len(data)-BlockSize:]); err != nil {
				return 0, err
			}
		}
		copy(data[uint64(off)%BlockSize:], p)
	}
	if err := f.storeBlocks(ino, first, data, cache); err != nil {
		return 0, err
	}
	t := now()
	// Extend, not SetAttrs(max(size, end)): a concurrent write may have
	// grown the file since the head was read.
	if err := f.trees.Extend(ino, end, t); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return len(p), nil
}

// zeroRange makes [off, off+n) read as zeros: whole blocks become holes,
// partial edge blocks are rewritten. Caller holds v.wmu and state.
func (f *FS) zeroRange(ino uint64, off, n, size uint64) error {
	end := off + n
	firstFull := (off + BlockSize - 1) / BlockSize
	endFull := end / BlockSize
	if firstFull < endFull {
		f.vol(ino).c.drop(f.wc, firstFull, endFull)
		if err := f.trees.Punch(ino, firstFull, endFull-firstFull); err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
	var buf [BlockSize]byte
	edge := func(blk, from, to uint64) error { // zero bytes [from, to) of blk
		if blk*BlockSize >= size {
			return nil
		}
		if f.dirtyPages(ino) == 0 {
			if _, ok, err := f.trees.NextData(ino, blk); err != nil || !ok {
				return err
			}
		}
		if err := f.readBlocks(ino, blk, buf[:]); err != nil {
			return err
		}
		clear(buf[from:to])
		// Not cached: a truncate changes the size in the tree at once, and
		// a commit of the trees (another volume's fsync) must never hold
		// the new size with the old bytes past it, which growing the file
		// again would expose.
		return f.storeBlocks(ino, blk, buf[:], false)
	}
	if off%BlockSize != 0 {
		blk := off / BlockSize
		to := min(end, (blk+1)*BlockSize) - blk*BlockSize
		if err := edge(blk, off%BlockSize, to); err != nil {
			return err
		}
		if end <= (blk+1)*BlockSize {
			return nil
		}
	}
	if end%BlockSize != 0 && end/BlockSize >= firstFull {
		blk := end / BlockSize
		if err := edge(blk, 0, end%BlockSize); err != nil {
			return err
		}
	}
	return nil
}

// Truncate sets a volume's size; blocks past it are dropped and the tail of
// the last block is zeroed, so a later extension reads zeros.
func (f *FS) Truncate(ino uint64, size uint64) error {
	if size > MaxSize {
		return ErrTooBig
	}
	if err := f.regular(ino); err != nil {
		return err
	}
	h, unlock, err := f.lockVolume(ino)
	if err != nil {
		return err
	}
	defer unlock()
	if size < h.Size {
		if err := f.zeroRange(ino, size, meta.MaxBlocks*BlockSize-size, h.Size); err != nil {
			return err
		}
	}
	t := now()
	if err := f.trees.SetAttrs(ino, size, t, t); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return nil
}

// fallocate modes.
const (
	FallocKeepSize  = 0x1
	FallocPunchHole = 0x2
	FallocZeroRange = 0x10
)

// Fallocate: mode 0 / KEEP_SIZE extend the size (blocks are not reserved:
// a log-structured store cannot preallocate, but it refuses a request
// larger than the free space); PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE make the
// range read as zeros and free its blocks.
func (f *FS) Fallocate(ino uint64, mode uint32, off, n uint64) error {
	if mode&^(FallocKeepSize|FallocPunchHole|FallocZeroRange) != 0 {
		return ErrNotSupported
	}
	if mode&FallocPunchHole != 0 && (mode&FallocKeepSize == 0 || mode&FallocZeroRange != 0) {
		return ErrNotSupported
	}
	if n == 0 || off+n > MaxSize || off+n < off {
		if n == 0 {
			return ErrInvalid
		}
		return ErrTooBig
	}
	if err := f.regular(ino); err != nil {
		return err
	}
	h, unlock, err := f.lockVolume(ino)
	if err != nil {
		return err
	}
	defer unlock()
	if mode&(FallocPunchHole|FallocZeroRange) != 0 {
		if err := f.zeroRange(ino, off, n, h.Size); err != nil {
			return err
		}
	} else {
		_, avail, err := f.log.Space()
		if err == nil && off+n > h.Size && off+n-h.Size > avail {
			return ErrNoSpace
		}
	}
	size := h.Size
	if mode&FallocKeepSize == 0 && off+n > size {
		size = off + n
	}
	t := now()
	if err := f.trees.SetAttrs(ino, size, t, t); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return nil
}

// lseek whence values.
const (
	SeekData = 3
	SeekHole = 4
)

// Lseek implements SEEK_DATA and SEEK_HOLE at block granularity. What the
// write-back cache holds is flushed first, so the tree knows every block.
func (f *FS) Lseek(ino uint64, off uint64, whence int) (uint64, error) {
	if err := f.flushVolume(ino); err != nil {
		return 0, err
	}
	h, err := f.trees.Head(ino)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return f.lseek(h, off, whence)
}

// SnapshotLseek is Lseek (SEEK_DATA/SEEK_HOLE) on a snapshot, so copies of
// a snapshot (qemu-img convert, cp) stay sparse.
func (f *FS) SnapshotLseek(id uint64, off uint64, whence int) (uint64, error) {
	s, err := f.trees.SnapshotByID(id)
	if err != nil {
		return 0, metaErr(err)
	}
	return f.lseek(s.Head, off, whence)
}

func (f *FS) lseek(h meta.Head, off uint64, whence int) (uint64, error) {
	if off >= h.Size {
		return 0, ErrNoData
	}
	switch whence {
	case SeekData:
		blk, ok, err := f.trees.NextDataIn(h, off/BlockSize)
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		if !ok || blk*BlockSize >= h.Size {
			return 0, ErrNoData
		}
		return max(off, blk*BlockSize), nil
	case SeekHole:
		blk, err := f.trees.NextHoleIn(h, off/BlockSize)
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		return min(max(off, blk*BlockSize), h.Size), nil
	}
	return 0, ErrInvalid
}

// CopyRange copies n bytes of src at srcOff to dst at dstOff (a volume
// may be both). Whole blocks that line up are shared, not copied: dst's
// tree points at src's blocks. Returns the bytes copied (short at src EOF).
func (f *FS) CopyRange(src uint64, srcOff uint64, dst uint64, dstOff uint64, n uint64) (uint64, error) {
	if err := f.regular(src); err != nil {
		return 0, err
	}
	if err := f.regular(dst); err != nil {
		return 0, err
	}
	// Shared blocks come from the trees: everything written before the
	// copy must be in them.
	if err := f.flushVolume(src); err != nil {
		return 0, err
	}
	if err := f.flushVolume(dst); err != nil {
		return 0, err
	}
	sh, err := f.trees.Head(src)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if srcOff >= sh.Size {
		return 0, nil
	}
	n = min(n, sh.Size-srcOff)
	if dstOff+n > MaxSize {
		return 0, ErrTooBig
	}
	if src == dst && srcOff < dstOff+n && dstOff < srcOff+n {
		// As copy_file_range(2): overlapping ranges of one file are
		// refused (a chunked forward copy would read what it just wrote).
		return 0, fmt.Errorf("%w: overlapping copy within one file", ErrInvalid)
	}
	// Unaligned head and tail are copied; the aligned middle is shared.
	if srcOff%BlockSize != dstOff%BlockSize || n < 2*BlockSize {
		return f.copyBytes(src, srcOff, dst, dstOff, n)
	}
	head := (BlockSize - srcOff%BlockSize) % BlockSize
	mid := (n - head) / BlockSize * BlockSize
	if head > 0 {
		if _, err := f.copyBytes(src, srcOff, dst, dstOff, head); err != nil {
			return 0, err
		}
	}
	if err := f.shareBlocks(src, (srcOff+head)/BlockSize, dst, (dstOff+head)/BlockSize, mid/BlockSize, dstOff+head+mid); err != nil {
		return head, err
	}
	if tail := n - head - mid; tail > 0 {
		if _, err := f.copyBytes(src, srcOff+head+mid, dst, dstOff+head+mid, tail); err != nil {
			return head + mid, err
		}
	}
	return n, nil
}

func (f *FS) shareBlocks(src, sfirst, dst, dfirst, nblk, dend uint64) error {
	_, unlock, err := f.lockVolume(dst)
	if err != nil {
		return err
	}
	defer unlock()
	ms, err := f.trees.Lookup(src, sfirst, nblk)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	for _, m := range ms {
		d := dfirst + (m.Block - sfirst)
		if m.Seg == 0 {
			err = f.trees.Punch(dst, d, m.N)
		} else {
			err = f.trees.Map(dst, d, m.N, m.Seg, m.Idx)
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
	h, err := f.trees.Head(dst)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	t := now()
	return f.trees.SetAttrs(dst, max(h.Size, dend), t, t)
}

func (f *FS) copyBytes(src, srcOff, dst, dstOff, n uint64) (uint64, error) {
	buf := make([]byte, min(n, 1<<20))
	var done uint64
	for done < n {
		k := min(uint64(len(buf)), n-done)
		r, err := f.ReadAt(src, buf[:k], int64(srcOff+done))
		if err != nil {
			return done, err
		}
		if r == 0 {
			break
		}
		if _, err := f.WriteAt(dst, buf[:r], int64(dstOff+done)); err != nil {
			return done, err
		}
		done += uint64(r)
	}
	return done, nil
}

// Fsync makes everything written to the volume so far durable. Only this
// volume's cached writes are written out (commitVolume).
func (f *FS) Fsync(ino uint64) error {
	v := f.vol(ino)
	if v.c.sinceSync.Swap(0) <= journalMax {
		// A writer that syncs after a few blocks (a database) is what the
		// fsync journal is for: write-through, if judged after a burst,
		// ends here.
		v.c.throughUntil.Store(0)
	}
	if taken, err := f.journalFsync(ino, v); taken {
		return err
	}
	if !v.c.jtracking() {
		// More was written since the last fsync than a journal record
		// holds: is the cache worth it for this volume?
		v.c.judge()
	}
	return f.commitVolume(ino)
}

// makeRoom runs before a write of n bytes takes the volume's locks: when
// the write-back cache is full, the writer flushes its own volume (the
// writer that fills the cache pays for it, as with the kernel's dirty
// limit), or, with nothing of its own cached, wakes the background flusher
// and its write goes to the log directly.
func (f *FS) makeRoom(ino uint64, n int) error {
	if !f.wc.on() || !f.wc.full(n/BlockSize+2) {
		return nil
	}
	if f.dirtyPages(ino) > 0 {
		return f.flushVolume(ino)
	}
	f.wc.wake()
	return nil
}
