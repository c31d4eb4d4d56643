// Package control is the channel between the vafs CLI and a running
// mount: the mount serves DATA/control.sock (Serve) and the clone,
// snapshot, describe, df and compact commands talk to it (Dial). The wire
// format is written down in docs/control-socket.md: length-prefixed
// msgpack frames with a version byte.
//
// The server only validates, resolves paths and calls the fs.FS methods
// (fs/snapshot.go, fs/usage.go); a bad request never reaches them and a
// panic while serving one is recovered and answered, so no input can crash
// the mount. control imports fs and never fs/fuse, go-fuse or cmd.
package control
