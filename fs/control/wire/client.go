package wire

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"
)

// SocketName is the control socket's file name in the data dir.
const SocketName = "control.sock"

// Client is a connection to one mount's control socket. Calls are
// sequential (a mutex serialises them); the connection is reused.
type Client struct {
	mu   sync.Mutex
	conn conn
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

// Call sends req (its V is set here) and decodes the result into out (nil:
// none expected). An error the server answers is an *Error.
func (c *Client) Call(req Request, out interface{}) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	req.V = Version
	// A request is small; if the server does not take it within a
	// minute, it is wedged. The answer may take long (a big clone).
	c.conn.SetWriteDeadline(time.Now().Add(time.Minute))
	if err := WriteFrame(c.conn, req); err != nil {
		return fmt.Errorf("send %s request to %s: %w", req.Op, c.path, err)
	}
	b, err := ReadFrame(c.conn)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%s: the mount closed the connection without answering (see its log)", req.Op)
		}
		return fmt.Errorf("%s: read answer from %s: %w", req.Op, c.path, err)
	}
	var resp RawResponse
	if err := Decode(b, &resp); err != nil {
		return fmt.Errorf("%s: malformed answer: %w", req.Op, err)
	}
	if resp.V != Version {
		return fmt.Errorf("%s: the mount answered with protocol version %d, this vafs speaks %d", req.Op, resp.V, Version)
	}
	if resp.Err != "" || resp.Kind != "" {
		return &Error{Kind: resp.Kind, Msg: resp.Err}
	}
	if out != nil {
		if err := Decode(resp.Result, out); err != nil {
			return fmt.Errorf("%s: malformed result: %w", req.Op, err)
		}
	}
	return nil
}

// Clone clones src (a path relative to the mount root; a snapshot is
// .snapshots/<file>/<name>) to dst and returns the new inode.
func (c *Client) Clone(src, dst string) (uint64, error) {
	var r Clone
	err := c.Call(Request{Op: OpClone, Src: src, Dst: dst}, &r)
	return r.Ino, err
}

// SnapshotCreate snapshots the file at path as name.
func (c *Client) SnapshotCreate(path, name string) (Snapshot, error) {
	var r Snapshot
	err := c.Call(Request{Op: OpSnapshotCreate, Path: path, Name: name}, &r)
	return r, err
}

// Snapshots lists the snapshots of the file at path, oldest first.
func (c *Client) Snapshots(path string) ([]Snapshot, error) {
	var r []Snapshot
	if err := c.Call(Request{Op: OpSnapshotList, Path: path}, &r); err != nil {
		return nil, err
	}
	return r, nil
}

// SnapshotDelete deletes the snapshot name of the file at path.
func (c *Client) SnapshotDelete(path, name string) error {
	return c.Call(Request{Op: OpSnapshotDelete, Path: path, Name: name}, nil)
}

// SnapshotRollback rolls the file at path back to the snapshot name.
func (c *Client) SnapshotRollback(path, name string, force bool) error {
	return c.Call(Request{Op: OpSnapshotRollback, Path: path, Name: name, Force: force}, nil)
}

// Describe describes the file at path.
func (c *Client) Describe(path string) (Description, error) {
	var r Description
	err := c.Call(Request{Op: OpDescribe, Path: path}, &r)
	return r, err
}

// Usage reports the space usage of the mount's data dir.
func (c *Client) Usage() (Usage, error) {
	var r Usage
	err := c.Call(Request{Op: OpDF}, &r)
	return r, err
}

// Compact runs one compaction pass on the mount.
func (c *Client) Compact() (Compaction, error) {
	var r Compaction
	err := c.Call(Request{Op: OpCompact}, &r)
	return r, err
}
