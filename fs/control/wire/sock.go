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
//
// The socket stays blocking and is not an *os.File: the runtime poller
// would cost a short-lived command (`vafs clone` makes one request) an
// epoll instance, an eventfd, their registrations and a hand-over
// between threads at each wait, for a single round trip. The write
// deadline is the socket's send timeout (SO_SNDTIMEO) instead.
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
	if err != nil {
		syscall.Close(fd)
		return nil, &os.PathError{Op: "connect", Path: path, Err: err}
	}
	return &sockConn{fd: fd, name: path}, nil
}

// sockConn is a connected, blocking unix stream socket. Its errors read
// like an *os.File's: "write PATH: broken pipe", "write PATH: i/o
// timeout".
type sockConn struct {
	fd   int
	name string
}

func (c *sockConn) Read(b []byte) (int, error) {
	if c.fd < 0 {
		return 0, &os.PathError{Op: "read", Path: c.name, Err: os.ErrClosed}
	}
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, err := syscall.Read(c.fd, b)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return 0, &os.PathError{Op: "read", Path: c.name, Err: err}
		}
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write writes all of b. MSG_NOSIGNAL: a mount that went away is an
// EPIPE error, not a SIGPIPE.
func (c *sockConn) Write(b []byte) (int, error) {
	if c.fd < 0 {
		return 0, &os.PathError{Op: "write", Path: c.name, Err: os.ErrClosed}
	}
	done := 0
	for done < len(b) {
		n, err := syscall.SendmsgN(c.fd, b[done:], nil, nil, syscall.MSG_NOSIGNAL)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN { // SO_SNDTIMEO expired
			return done, &os.PathError{Op: "write", Path: c.name, Err: os.ErrDeadlineExceeded}
		}
		if err != nil {
			return done, &os.PathError{Op: "write", Path: c.name, Err: err}
		}
		done += n
	}
	return done, nil
}

// SetWriteDeadline sets the send timeout to what is left until t; the
// zero time removes it. A deadline already passed fails the next write.
func (c *sockConn) SetWriteDeadline(t time.Time) error {
	if c.fd < 0 {
		return &os.PathError{Op: "set", Path: c.name, Err: os.ErrClosed}
	}
	var tv syscall.Timeval
	if !t.IsZero() {
		d := time.Until(t)
		if d < time.Microsecond {
			d = time.Microsecond // 0 would mean no timeout
		}
		tv = syscall.NsecToTimeval(d.Nanoseconds())
	}
	if err := syscall.SetsockoptTimeval(c.fd, syscall.SOL_SOCKET, syscall.SO_SNDTIMEO, &tv); err != nil {
		return &os.PathError{Op: "set", Path: c.name, Err: os.NewSyscallError("setsockopt", err)}
	}
	return nil
}

func (c *sockConn) Close() error {
	if c.fd < 0 {
		return &os.PathError{Op: "close", Path: c.name, Err: os.ErrClosed}
	}
	err := syscall.Close(c.fd)
	c.fd = -1
	if err != nil {
		return &os.PathError{Op: "close", Path: c.name, Err: err}
	}
	return nil
}
