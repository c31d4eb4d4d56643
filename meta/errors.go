package meta

import "errors"

var (
	// ErrNotFound: the inode, entry, xattr, head or snapshot does not exist.
	ErrNotFound = errors.New("meta: not found")
	// ErrCorrupt: a record failed to decode.
	ErrCorrupt = errors.New("meta: corrupt record")
	// ErrTooLarge: the block number is beyond what a tree can address.
	ErrTooLarge = errors.New("meta: block number out of range")
)
