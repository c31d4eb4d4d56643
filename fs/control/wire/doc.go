// Package wire is the control socket's protocol and its client: the frame
// and message format of docs/control-socket.md, the error kinds, and Dial.
// The vafs command-line client links it to reach a running mount; the
// server that answers it is the parent package, fs/control.
//
// wire imports msgpack and the standard library only, never fs, meta,
// blocks or anything that opens the store: `vafs clone` must start in a
// few milliseconds, and every package linked into the client adds its
// initialisation to each run (the root test TestThinClientDeps keeps it
// so). Results are therefore the wire's own types (Snapshot, Description,
// ...), and an error answered by the mount is an *Error with a Kind, not
// an fs sentinel; fs/control.AsFS makes one match its fs sentinel for Go
// callers that link fs anyway.
package wire
