package meta

import "errors"

var (
	// ErrNotFound: the inode, entry, xattr, head or snapshot does not exist.
	ErrNotFound = errors.New("meta: not found")
	// ErrCorrupt: a record failed to decode.
	ErrCorrupt = errors.New("meta: corrupt record")
	// ErrTooLarge: the block number is beyond what a tree can address.
	ErrTooLarge = errors.New("meta: block number out of range")
	// ErrTooNew: the data dir was written by a newer vafs.
	ErrTooNew = errors.New("meta: unsupported data dir")
	// ErrNotVafs: the directory holds no vafs metadata.
	ErrNotVafs = errors.New("meta: not a vafs data dir")
	// ErrReadOnly: a change to a database opened read-only.
	ErrReadOnly = errors.New("meta: opened read-only")
)
