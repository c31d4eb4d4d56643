package control

import (
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/vafs/vafs/fs"
)

// SocketName is the control socket's file name in the data dir.
const SocketName = "control.sock"

// Error is an error answered by the server: Kind is one of the Kind
// constants, Msg the text for the user. errors.Is matches it against the
// fs sentinel of its kind (fs.ErrExists, fs.ErrBusy, ...).
type Error struct {
	Kind string
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Is lets errors.Is(err, fs.ErrBusy) work on the client side.
func (e *Error) Is(target error) bool {
	for _, k := range kinds {
		if k.kind == e.Kind && k.err == target {
			return true
		}
	}
	return false
}

// Client is a connection to one mount's control socket. Calls are
// sequential (a mutex serialises them); the connection is reused.
type Client struct {
	mu   sync.Mutex
	conn net.Conn
	path string
}

// Dial connects to the control socket of the mount serving dataDir.
func Dial(dataDir string) (*Client, error) {
	path := filepath.Join(dataDir, SocketName)
	c, err := dialUnix(path)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the mount of %s through %s (is it mounted by this vafs version?): %w", dataDir, path, err)
	}
	return &Client{conn: c, path: path}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// call sends req and decodes the result into out (nil: none expected).
func (c *Client) call(req request, out interface{}) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	req.V = Version
	// A request is small; if the server does not take it within a
	// minute, it is wedged. The answer may take long (a big clone).
	c.conn.SetWriteDeadline(time.Now().Add(time.Minute))
	if err := writeFrame(c.conn, req); err != nil {
		return fmt.Errorf("send %s request to %s: %w", req.Op, c.path, err)
	}
	b, err := readFrame(c.conn)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%s: the mount closed the connection without answering (see its log)", req.Op)
		}
		return fmt.Errorf("%s: read answer from %s: %w", req.Op, c.path, err)
	}
	var resp rawResponse
	if err := decode(b, &resp); err != nil {
		return fmt.Errorf("%s: malformed answer: %w", req.Op, err)
	}
	if resp.V != Version {
		return fmt.Errorf("%s: the mount answered with protocol version %d, this vafs speaks %d", req.Op, resp.V, Version)
	}
	if resp.Err != "" || resp.Kind != "" {
		return &Error{Kind: resp.Kind, Msg: resp.Err}
	}
	if out != nil {
		if err := decode(resp.Result, out); err != nil {
			return fmt.Errorf("%s: malformed result: %w", req.Op, err)
		}
	}
	return nil
}

// Clone clones src (a path relative to the mount root; a snapshot is
// .snapshots/<file>/<name>) to dst and returns the new inode.
func (c *Client) Clone(src, dst string) (uint64, error) {
	var r wireClone
	err := c.call(request{Op: OpClone, Src: src, Dst: dst}, &r)
	return r.Ino, err
}

// SnapshotCreate snapshots the file at path as name.
func (c *Client) SnapshotCreate(path, name string) (fs.Snapshot, error) {
	var r wireSnapshot
	if err := c.call(request{Op: OpSnapshotCreate, Path: path, Name: name}, &r); err != nil {
		return fs.Snapshot{}, err
	}
	return r.snapshot(), nil
}

// Snapshots lists the snapshots of the file at path, oldest first.
func (c *Client) Snapshots(path string) ([]fs.Snapshot, error) {
	var r []wireSnapshot
	if err := c.call(request{Op: OpSnapshotList, Path: path}, &r); err != nil {
		return nil, err
	}
	out := make([]fs.Snapshot, len(r))
	for i, w := range r {
		out[i] = w.snapshot()
	}
	return out, nil
}

// SnapshotDelete deletes the snapshot name of the file at path.
func (c *Client) SnapshotDelete(path, name string) error {
	return c.call(request{Op: OpSnapshotDelete, Path: path, Name: name}, nil)
}

// SnapshotRollback rolls the file at path back to the snapshot name.
func (c *Client) SnapshotRollback(path, name string, force bool) error {
	return c.call(request{Op: OpSnapshotRollback, Path: path, Name: name, Force: force}, nil)
}

// Describe describes the file at path.
func (c *Client) Describe(path string) (fs.Description, error) {
	var r wireDescription
	if err := c.call(request{Op: OpDescribe, Path: path}, &r); err != nil {
		return fs.Description{}, err
	}
	d := fs.Description{Ino: r.Ino, Size: r.Size, Allocated: r.Allocated, Unique: r.Unique, Shared: r.Shared,
		SnapshotOnly: r.SnapshotOnly, Origin: r.Origin}
	for _, w := range r.Snapshots {
		d.Snapshots = append(d.Snapshots, w.snapshot())
	}
	return d, nil
}

// Usage reports the space usage of the mount's data dir.
func (c *Client) Usage() (fs.Usage, error) {
	var r wireUsage
	if err := c.call(request{Op: OpDF}, &r); err != nil {
		return fs.Usage{}, err
	}
	return fs.Usage{Files: r.Files, Snapshots: r.Snapshots, Logical: r.Logical, SnapshotLogical: r.SnapshotLogical,
		Physical: r.Physical, Saved: r.Saved, Stored: r.Stored, Metadata: r.Metadata, Segments: r.Segments}, nil
}

// Compact runs one compaction pass on the mount.
func (c *Client) Compact() (fs.CompactStats, error) {
	var r wireCompact
	if err := c.call(request{Op: OpCompact}, &r); err != nil {
		return fs.CompactStats{}, err
	}
	return fs.CompactStats{Segments: r.Segments, Moved: r.Moved, Freed: r.Freed}, nil
}

func (w wireSnapshot) snapshot() fs.Snapshot {
	s := fs.Snapshot{Name: w.Name, ID: w.ID, Vol: w.Vol, Size: w.Size, Blocks: w.Blocks}
	if w.Created != 0 {
		s.Created = time.Unix(0, w.Created)
	}
	return s
}
