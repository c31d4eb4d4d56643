package blocks

// Store keeps segment objects: byte arrays addressed by SegmentID. One
// conformance suite (blocks/storetest) runs against every implementation.
//
// Contract:
//   - Create makes a new, empty segment; ErrExists if it is already there.
//     It is durable once created, or, for a NameSyncer, after SyncNames.
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

// NameSyncer is a Store whose Create does not by itself make the new
// segment's name durable (a directory of files: the directory's fsync is
// what does). SyncNames makes the names of all segments created before it
// durable. The Log calls it in Sync, before it syncs the files of segments
// created since its last call, so that a commit never refers to a segment
// that a crash could lose; segment creation stays off the append path.
type NameSyncer interface {
	SyncNames() error
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
