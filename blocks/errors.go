package blocks

import (
	"errors"
	"fmt"
)

var (
	// ErrNotFound is returned by a Store for a segment it does not hold.
	ErrNotFound = errors.New("blocks: segment not found")
	// ErrExists is returned by Store.Create for a segment that already exists.
	ErrExists = errors.New("blocks: segment exists")
	// ErrChecksum is matched (errors.Is) by every *CorruptError.
	ErrChecksum = errors.New("blocks: checksum mismatch")
	// ErrNoSpace is returned when the store's disk is (nearly) full. Appends
	// stop while a reserve is left so that metadata can still commit.
	ErrNoSpace = errors.New("blocks: no space left")
	// ErrClosed is returned after Log.Close.
	ErrClosed = errors.New("blocks: log closed")
	// ErrSyncFailed: a sync of segment data failed. What it covered may be
	// lost, so the Log refuses every later Sync and Append.
	ErrSyncFailed = errors.New("blocks: sync failed")
)

// CorruptError names the block whose checksum (or header) did not match.
type CorruptError struct {
	Seg    SegmentID
	Index  uint32
	Volume uint64 // volume and block the header claims, when it could be parsed
	Block  uint64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("blocks: checksum mismatch: segment %s index %d (header volume %d block %d): %s",
		e.Seg, e.Index, e.Volume, e.Block, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrChecksum }
