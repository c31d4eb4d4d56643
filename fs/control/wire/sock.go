package wire

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// MaxSunPath is the room for a path in a unix socket address (sun_path
// is 108 bytes with the NUL).
const MaxSunPath = 107

// ShortPath is how a socket path longer than MaxSunPath (a deep data dir)
// is reached: through /proc/self/fd/N of its directory, dir, which the
// kernel resolves like any path. Both sides use it.
func ShortPath(dir *os.File, path string) string {
	return fmt.Sprintf("/proc/self/fd/%s/%s", strconv.Itoa(int(dir.Fd())), filepath.Base(path))
}

// conn is what the client needs of a connection.
type conn interface {
	io.ReadWriteCloser
	SetWriteDeadline(time.Time) error
}

// dialUnix connects to the unix socket at path (see ShortPath). It uses
// the socket system calls rather than package net: net's initialisation
// and its cgo resolver would be linked into the vafs command line for
// nothing (a unix socket needs no resolver), and without any cgo
// package the client is a static binary even when built with cgo on.
// The socket is made non-blocking before it becomes an *os.File, so that
// it goes through the runtime poller and deadlines work.
func dialUnix(path string) (conn, error) {
	if len(path) > MaxSunPath {
		dir, err := os.Open(filepath.Dir(path))
		if err != nil {
			return nil, err
		}
		defer dir.Close()
		path = ShortPath(dir, path)
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	for {
		err = syscall.Connect(fd, &syscall.SockaddrUnix{Name: path})
		if err != syscall.EINTR {
			break
		}
	}
	if err == nil {
		err = syscall.SetNonblock(fd, true)
	}
	if err != nil {
		syscall.Close(fd)
		return nil, &os.PathError{Op: "connect", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}
