package fuse

import (
	"errors"
	"log"
	"syscall"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	vfs "github.com/vafs/vafs/fs"
)

var errnos = []struct {
	err   error
	errno syscall.Errno
}{
	{vfs.ErrNotFound, syscall.ENOENT},
	{vfs.ErrExists, syscall.EEXIST},
	{vfs.ErrNotDir, syscall.ENOTDIR},
	{vfs.ErrIsDir, syscall.EISDIR},
	{vfs.ErrNotEmpty, syscall.ENOTEMPTY},
	{vfs.ErrInvalid, syscall.EINVAL},
	{vfs.ErrNameTooLong, syscall.ENAMETOOLONG},
	{vfs.ErrNoAttr, syscall.ENODATA},
	{vfs.ErrNoSpace, syscall.ENOSPC},
	{vfs.ErrNotSupported, syscall.EOPNOTSUPP},
	{vfs.ErrPerm, syscall.EPERM},
	{vfs.ErrNoData, syscall.ENXIO},
	{vfs.ErrTooBig, syscall.EFBIG},
	{vfs.ErrReadOnly, syscall.EROFS},
	{vfs.ErrXattrRange, syscall.E2BIG},
	{vfs.ErrBusy, syscall.EBUSY},
	{syscall.ENOSPC, syscall.ENOSPC},
}

// toErrno is the one place an error becomes an errno. Anything not known
// (corruption, I/O failure) is EIO with a log line — never ENOENT.
func toErrno(lg *log.Logger, op string, err error) gofuse.Status {
	if err == nil {
		return gofuse.OK
	}
	for _, e := range errnos {
		if errors.Is(err, e.err) {
			return gofuse.Status(e.errno)
		}
	}
	lg.Printf("%s: %v (EIO)", op, err)
	return gofuse.EIO
}
