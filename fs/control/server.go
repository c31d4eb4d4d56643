package control

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/vafs/vafs/fs"
	"github.com/vafs/vafs/fs/control/wire"
)

// idleTimeout bounds how long a connection may sit between requests (or
// in the middle of one); an operation itself is never timed out.
const idleTimeout = time.Minute

// engine is what the server needs of the file system (*fs.FS; tests
// substitute a misbehaving one).
type engine interface {
	Resolve(path string) (uint64, error)
	SnapshotCreate(ino uint64, name string) (fs.Snapshot, error)
	SnapshotDelete(ino uint64, name string) error
	Snapshots(ino uint64) ([]fs.Snapshot, error)
	SnapshotRollback(ino uint64, name string, force bool) error
	CloneWithOrigin(src, dstParent uint64, dstName, origin string) (fs.Attr, error)
	CloneSnapshotWithOrigin(id, dstParent uint64, dstName, origin string) (fs.Attr, error)
	Describe(ino uint64) (fs.Description, error)
	Usage() (fs.Usage, error)
	Compact() (fs.CompactStats, error)
}

var _ engine = (*fs.FS)(nil)

// Server answers control requests for one mounted FS.
type Server struct {
	f    engine
	path string
	ln   net.Listener
	lg   *log.Logger

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// Serve listens on path (a unix socket, mode 0600) and answers requests
// for f until Close. A file left at path by an earlier mount is removed:
// the caller holds the data dir lock, so no live server can own it.
func Serve(f *fs.FS, path string, lg *log.Logger) (*Server, error) {
	return serve(f, path, lg)
}

func serve(f engine, path string, lg *log.Logger) (*Server, error) {
	if lg == nil {
		lg = log.New(io.Discard, "", 0)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control: remove stale socket: %w", err)
	}
	ln, err := listenUnix(path)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	// The data dir is 0700 already; the socket is 0600 so that a data dir
	// made group-readable does not open it. (umask cannot be used: it is
	// per process, and the mount has other threads creating files.)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("control: %w", err)
	}
	s := &Server{f: f, path: path, ln: ln, lg: lg, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Close stops accepting, waits for the requests being served to finish
// (the FS must stay open until then), drops idle connections and removes
// the socket file.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		// Wakes a connection blocked reading its next request; one in
		// the middle of an operation finishes it and answers first.
		c.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	s.wg.Wait()
	if e := os.Remove(s.path); e != nil && !errors.Is(e, os.ErrNotExist) && err == nil {
		err = e
	}
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// EMFILE and the like: back off rather than spin.
			s.lg.Printf("control: accept: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// serveConn answers requests on c one after the other until the client
// closes it, a frame is malformed, or the server closes.
func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		if r := recover(); r != nil {
			s.lg.Printf("control: panic serving a connection: %v\n%s", r, debug.Stack())
		}
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	for {
		// Under mu, so that Close's wake-up deadline cannot be
		// overwritten by this one.
		s.mu.Lock()
		closed := s.closed
		if !closed {
			c.SetDeadline(time.Now().Add(idleTimeout))
		}
		s.mu.Unlock()
		if closed {
			return
		}
		b, err := wire.ReadFrame(c)
		if err != nil {
			switch {
			case errors.Is(err, wire.ErrTooBig), errors.Is(err, wire.ErrEmpty):
				s.reply(c, wire.Response{V: wire.Version, Err: "malformed request: " + strings.TrimPrefix(err.Error(), "control: "), Kind: wire.KindProto})
			case errors.Is(err, io.EOF), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, net.ErrClosed):
			default:
				s.lg.Printf("control: read: %v", err)
			}
			return
		}
		req, perr := wire.DecodeRequest(b)
		if perr != nil {
			s.reply(c, wire.Response{V: wire.Version, Err: perr.Msg, Kind: perr.Kind})
			return
		}
		c.SetDeadline(time.Time{}) // an operation may take long (a big tree clone)
		if !s.reply(c, s.handle(req)) {
			return
		}
	}
}

func (s *Server) reply(c net.Conn, r wire.Response) bool {
	c.SetWriteDeadline(time.Now().Add(idleTimeout))
	if err := wire.WriteFrame(c, r); err != nil {
		s.lg.Printf("control: reply to %s: %v", r.Err, err)
		return false
	}
	return true
}

// handle runs one request. A panic is answered as an internal error (and
// logged) so that the client learns of it and the mount goes on.
func (s *Server) handle(req wire.Request) (resp wire.Response) {
	defer func() {
		if r := recover(); r != nil {
			s.lg.Printf("control: panic in %s: %v\n%s", req.Op, r, debug.Stack())
			resp = wire.Response{V: wire.Version, Err: fmt.Sprintf("internal error in %s: %v (see the mount's log)", req.Op, r), Kind: wire.KindIO}
		}
	}()
	result, err := s.dispatch(req)
	if err != nil {
		var e *wire.Error
		if !errors.As(err, &e) {
			e = &wire.Error{Kind: kindOf(err), Msg: trimFS(err.Error())}
		}
		if e.Kind == wire.KindIO {
			s.lg.Printf("control: %s: %v", req.Op, err)
		}
		return wire.Response{V: wire.Version, Err: e.Msg, Kind: e.Kind}
	}
	return wire.Response{V: wire.Version, Result: result}
}

func (s *Server) dispatch(req wire.Request) (interface{}, error) {
	switch req.Op {
	case wire.OpClone:
		return s.clone(req.Src, req.Dst)
	case wire.OpSnapshotCreate:
		ino, err := s.resolveFile(req.Path)
		if err != nil {
			return nil, err
		}
		sn, err := s.f.SnapshotCreate(ino, req.Name)
		if err != nil {
			invalid := "not a regular file"
			if !nameOK(req.Name) {
				invalid = "invalid snapshot name (1-255 bytes, no '/', not '.' or '..')"
			}
			return nil, explain(err, map[string]string{wire.KindExists: "snapshot exists", wire.KindInvalid: invalid,
				wire.KindIsDir: "is a directory, not a file (snapshot its files)"})
		}
		return toWireSnapshot(sn), nil
	case wire.OpSnapshotList:
		ino, err := s.resolveFile(req.Path)
		if err != nil {
			return nil, err
		}
		list, err := s.f.Snapshots(ino)
		if err != nil {
			return nil, err
		}
		out := make([]wire.Snapshot, len(list))
		for i, sn := range list {
			out[i] = toWireSnapshot(sn)
		}
		return out, nil
	case wire.OpSnapshotDelete:
		ino, err := s.resolveFile(req.Path)
		if err != nil {
			return nil, err
		}
		return nil, explain(s.f.SnapshotDelete(ino, req.Name), map[string]string{wire.KindNotFound: "no such snapshot"})
	case wire.OpSnapshotRollback:
		ino, err := s.resolveFile(req.Path)
		if err != nil {
			return nil, err
		}
		return nil, explain(s.f.SnapshotRollback(ino, req.Name, req.Force),
			map[string]string{wire.KindNotFound: "no such snapshot", wire.KindBusy: "file is open for writing"})
	case wire.OpDescribe:
		ino, err := s.resolveFile(req.Path)
		if err != nil {
			return nil, err
		}
		d, err := s.f.Describe(ino)
		if err != nil {
			return nil, err
		}
		w := wire.Description{Ino: d.Ino, Size: d.Size, Allocated: d.Allocated, Unique: d.Unique,
			Shared: d.Shared, SnapshotOnly: d.SnapshotOnly, Origin: d.Origin, Snapshots: []wire.Snapshot{}}
		for _, sn := range d.Snapshots {
			w.Snapshots = append(w.Snapshots, toWireSnapshot(sn))
		}
		return w, nil
	case wire.OpDF:
		u, err := s.f.Usage()
		if err != nil {
			return nil, err
		}
		return wire.Usage{Files: u.Files, Snapshots: u.Snapshots, Logical: u.Logical, SnapshotLogical: u.SnapshotLogical,
			Physical: u.Physical, Saved: u.Saved, Stored: u.Stored, Metadata: u.Metadata, Segments: u.Segments}, nil
	case wire.OpCompact:
		st, err := s.f.Compact()
		if err != nil {
			return nil, err
		}
		return wire.Compaction{Segments: st.Segments, Moved: st.Moved, Freed: st.Freed}, nil
	case "":
		return nil, &wire.Error{Kind: wire.KindUnknownOp, Msg: "request without an op"}
	default:
		return nil, &wire.Error{Kind: wire.KindUnknownOp, Msg: fmt.Sprintf("unknown op %q", truncate(req.Op, 64))}
	}
}

// clone resolves SRC (a file or directory of the mount, or a snapshot
// SnapshotDir/<file>/<name>) and DST's parent, and clones.
func (s *Server) clone(src, dst string) (interface{}, error) {
	sp, err := cleanPath(src)
	if err != nil {
		return nil, err
	}
	dp, err := filePath(dst)
	if err != nil {
		return nil, err
	}
	// Every check of the arguments' shape comes before any lookup.
	var snapFile, snapName string
	switch {
	case sp == "":
		return nil, invalidf("cannot clone the mount root")
	case sp == SnapshotDir:
		return nil, invalidf("cannot clone %s itself; name a snapshot (%s/<path of the file>/<name>)", SnapshotDir, SnapshotDir)
	case inSnapshots(sp):
		if snapFile, snapName, err = splitSnapshot(sp); err != nil {
			return nil, err
		}
	}
	dir, name := path.Split(dp)
	dir = strings.TrimSuffix(dir, "/")
	parent, err := s.f.Resolve(dir)
	if err != nil {
		return nil, named(err, dirOrRoot(dir))
	}
	exists := map[string]string{wire.KindExists: dp + " exists"}
	var a fs.Attr
	if snapFile != "" {
		ino, err := s.f.Resolve(snapFile)
		if err != nil {
			return nil, named(err, snapFile)
		}
		list, err := s.f.Snapshots(ino)
		if err != nil {
			return nil, named(err, snapFile)
		}
		id, found := uint64(0), false
		for _, sn := range list {
			if sn.Name == snapName {
				id, found = sn.ID, true
				break
			}
		}
		if !found {
			return nil, &wire.Error{Kind: wire.KindNotFound, Msg: fmt.Sprintf("%s has no snapshot %q", snapFile, snapName)}
		}
		if a, err = s.f.CloneSnapshotWithOrigin(id, parent, name, snapFile+"@"+snapName); err != nil {
			return nil, explain(err, exists)
		}
	} else {
		ino, err := s.f.Resolve(sp)
		if err != nil {
			return nil, named(err, sp)
		}
		if a, err = s.f.CloneWithOrigin(ino, parent, name, sp); err != nil {
			return nil, explain(err, exists)
		}
	}
	return wire.Clone{Ino: a.Ino}, nil
}

// resolveFile resolves the path of a file-level op. The CLI already names
// the path in its message, so a lookup error is not prefixed with it.
func (s *Server) resolveFile(p string) (uint64, error) {
	c, err := filePath(p)
	if err != nil {
		return 0, err
	}
	ino, err := s.f.Resolve(c)
	if err != nil {
		return 0, explain(err, map[string]string{wire.KindNotFound: "no such file or directory", wire.KindNotDir: "not a directory"})
	}
	return ino, nil
}

// nameOK is the snapshot name rule of docs/cli-snapshots.md; the engine
// enforces it, this only picks the message for its ErrInvalid.
func nameOK(n string) bool {
	return len(n) >= 1 && len(n) <= fs.MaxName && n != "." && n != ".." && !strings.ContainsAny(n, "/\x00")
}

// explain gives err the text of its kind from texts (the engine's
// sentinel texts say "file exists" where the user wants "snapshot
// exists"), or the engine's own text.
func explain(err error, texts map[string]string) error {
	if err == nil {
		return nil
	}
	k := kindOf(err)
	if t, ok := texts[k]; ok {
		return &wire.Error{Kind: k, Msg: t}
	}
	return &wire.Error{Kind: k, Msg: trimFS(err.Error())}
}

// named prefixes err's text with the path it is about (clone has two).
func named(err error, p string) error {
	return &wire.Error{Kind: kindOf(err), Msg: p + ": " + trimFS(err.Error())}
}

func dirOrRoot(d string) string {
	if d == "" {
		return "the mount root"
	}
	return d
}

// trimFS drops the "fs: " package prefixes of engine errors, which mean
// nothing to a user.
func trimFS(s string) string { return strings.ReplaceAll(s, "fs: ", "") }

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func toWireSnapshot(s fs.Snapshot) wire.Snapshot {
	var created int64
	if !s.Created.IsZero() {
		created = s.Created.UnixNano()
	}
	return wire.Snapshot{Name: s.Name, ID: s.ID, Vol: s.Vol, Created: created, Size: s.Size, Blocks: s.Blocks}
}
