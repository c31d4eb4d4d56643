package blocks

// Store keeps segment objects: byte arrays addressed by SegmentID. One
// conformance suite (blocks/storetest) runs against every implementation.
//
// Contract:
//   - Create makes a new, empty segment; ErrExists if it is already there.
//   - Open opens an existing segment for reading (and, for an open segment,
//     appending); ErrNotFound if absent.
//   - Remove is idempotent: removing a missing segment is not an error.
//   - List returns every segment held, in no particular order.
//   - Space reports the capacity and free bytes of the medium.
//   - Errors from the medium are returned wrapped, so errors.Is finds
//     syscall.ENOSPC, syscall.EIO and friends.
type Store interface {
	Create(id SegmentID) (SegmentFile, error)
	Open(id SegmentID) (SegmentFile, error)
	Remove(id SegmentID) error
	List() ([]SegmentID, error)
	Space() (total, free uint64, err error)
}

// SegmentFile is one segment object. ReadAt and WriteAt are safe for
// concurrent use; ReadAt past the end returns io.EOF (possibly with n > 0).
// Sync makes every completed WriteAt durable.
type SegmentFile interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Sync() error
	Size() (int64, error)
	Close() error
}
