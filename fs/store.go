package fs

// Room "store" (doc.go, "Rooms"): the bottom of the package. The table of
// volumes (vmu, vols), appending blocks to the log and mapping them into
// a tree, reading an inode, and turning lower errors into fs errors. It
// calls nothing else in the package.

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/meta"
)

func (f *FS) vol(ino uint64) *volume {
	f.vmu.Lock()
	defer f.vmu.Unlock()
	v := f.vols[ino]
	if v == nil {
		v = &volume{}
		// Nothing of it is cached yet: the journal may track it from here.
		v.c.j.track = true
		f.vols[ino] = v
	}
	return v
}

func (f *FS) ioErr(what string, err error) error {
	if errors.Is(err, blocks.ErrNoSpace) || errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %s: %v", ErrNoSpace, what, err)
	}
	return fmt.Errorf("fs: %s: %w", what, err)
}

// putBlocks appends whole blocks and maps them. Caller holds v.wmu and state.
func (f *FS) putBlocks(ino, first uint64, data []byte) error {
	return f.putBlocksFrom(ino, first, len(data)/BlockSize, func(i int) []byte { return data[i*BlockSize : (i+1)*BlockSize] })
}

// putBlocksFrom is putBlocks of n blocks that block(i) returns one by one.
func (f *FS) putBlocksFrom(ino, first uint64, n int, block func(i int) []byte) error {
	exts, err := f.log.AppendBlocks(f.volumeClass(ino), ino, first, n, block)
	if err != nil {
		return f.ioErr("write", err)
	}
	blk := first
	for _, e := range exts {
		if err := f.trees.Map(ino, blk, uint64(e.N), uint64(e.Seg), e.Index); err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		blk += uint64(e.N)
	}
	return nil
}

// metaErr maps what the tree operations report to fs sentinels.
func metaErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, meta.ErrExists):
		return fmt.Errorf("%w: %v", ErrExists, err)
	case errors.Is(err, meta.ErrNotFound):
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

// inode reads an inode that a directory entry or the kernel refers to. Its
// absence is ErrNotFound only when the caller says the ino came from
// outside; an entry pointing at nothing is corruption.
func (f *FS) inode(ino uint64) (*meta.Inode, error) {
	in, err := f.db.GetInode(ino)
	if errors.Is(err, meta.ErrNotFound) {
		return nil, fmt.Errorf("%w: inode %d", ErrNotFound, ino)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return in, nil
}

func isDir(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFDIR }

func isReg(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFREG }

func now() int64 { return time.Now().UnixNano() }

func segmentSize(store blocks.Store, id blocks.SegmentID) (int64, error) {
	sf, err := store.Open(id)
	if err != nil {
		return 0, err
	}
	defer sf.Close()
	return sf.Size()
}
