package fs

// Room "lifecycle" (doc.go, "Rooms"): the package's error sentinels.

import "errors"

// Sentinels; fs/fuse maps each to one errno.
var (
	ErrNotFound     = errors.New("fs: no such file or directory")
	ErrExists       = errors.New("fs: file exists")
	ErrNotDir       = errors.New("fs: not a directory")
	ErrIsDir        = errors.New("fs: is a directory")
	ErrNotEmpty     = errors.New("fs: directory not empty")
	ErrInvalid      = errors.New("fs: invalid argument")
	ErrNameTooLong  = errors.New("fs: name too long")
	ErrNoAttr       = errors.New("fs: no such attribute")
	ErrNoSpace      = errors.New("fs: no space left on device")
	ErrNotSupported = errors.New("fs: operation not supported")
	ErrPerm         = errors.New("fs: operation not permitted")
	ErrNoData       = errors.New("fs: no data past offset") // ENXIO for SEEK_DATA/SEEK_HOLE
	ErrTooBig       = errors.New("fs: file too large")
	ErrReadOnly     = errors.New("fs: read-only")
	ErrLocked       = errors.New("fs: data dir in use")
	ErrCorrupt      = errors.New("fs: corrupt metadata")
	ErrXattrRange   = errors.New("fs: xattr value too large")
	ErrBusy         = errors.New("fs: file is open for writing")
)
