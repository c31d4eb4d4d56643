// Package fuse binds fs to the kernel with go-fuse's raw API. It is the
// only package that knows FUSE and the only place where an error becomes an
// errno (toErrno). Node ids are vafs inode numbers, which are never reused,
// so the kernel's lookup counts need no bookkeeping: an inode lives while
// it has a link or an open handle. The read-only .snapshots tree exists
// only here (snapshots.go); its node ids have one of the two top bits set,
// which real inode numbers never reach.
package fuse
