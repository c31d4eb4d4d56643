package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The example in docs/control-socket.md is what the client sends.
func TestDocExample(t *testing.T) {
	const doc = "00 00 00 2e 84 a1 76 01 a2 6f 70 af 73 6e 61 70 73 68 6f 74 5f 63 72 65 61 74 65 a4 70 61 74 68 a9 76 6d 73 2f 61 2e 72 61 77 a4 6e 61 6d 65 a2 73 31"
	var b bytes.Buffer
	if err := WriteFrame(&b, Request{V: Version, Op: OpSnapshotCreate, Path: "vms/a.raw", Name: "s1"}); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(fmt.Sprintf("% x", b.Bytes())); got != doc {
		t.Fatalf("frame\n%s\ndocs/control-socket.md says\n%s", got, doc)
	}
	md, err := os.ReadFile("../../../docs/control-socket.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), doc) {
		t.Fatal("docs/control-socket.md no longer shows the example frame")
	}
}

// A Snapshot's Created is Unix nanoseconds, 0 for unknown.
func TestCreatedTime(t *testing.T) {
	if !(Snapshot{}).CreatedTime().IsZero() {
		t.Error("0 is not the zero time")
	}
	at := time.Unix(1764580000, 123456789)
	if got := (Snapshot{Created: at.UnixNano()}).CreatedTime(); !got.Equal(at) {
		t.Errorf("got %v, want %v", got, at)
	}
}

func TestIsKind(t *testing.T) {
	err := fmt.Errorf("rollback: %w", &Error{Kind: KindBusy, Msg: "file is open for writing"})
	if !IsKind(err, KindBusy) || IsKind(err, KindIO) || IsKind(errors.New("busy"), KindBusy) {
		t.Error("IsKind does not match on the kind alone")
	}
}

// The client's write deadline works on its plain blocking socket (the
// send timeout): a server that takes nothing makes a write fail with
// os.ErrDeadlineExceeded, as an *os.File's would, instead of hanging.
func TestDialWriteDeadline(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.conn.SetWriteDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatalf("SetWriteDeadline: %v", err)
	}
	// Far more than a socket buffer; nobody reads.
	done := make(chan error, 1)
	go func() {
		_, err := c.conn.Write(make([]byte, 64<<20))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "i/o timeout") {
			t.Fatalf("write to a server that reads nothing: %v; want an i/o timeout", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("write to a server that reads nothing ignores the deadline")
	}
	if _, err := Dial(t.TempDir()); err == nil || !strings.Contains(err.Error(), "cannot reach the mount") {
		t.Fatalf("Dial without a socket: %v", err)
	}
}

// A mount that closes the connection is EOF to Read and EPIPE to Write
// (never a SIGPIPE that would kill the command).
func TestConnClosedByServer(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := c.conn.Read(make([]byte, 4)); err != io.EOF {
		t.Fatalf("read after the server closed: %v, want EOF", err)
	}
	if _, err := c.conn.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write after the server closed: %v, want EPIPE", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("second Close: %v, want os.ErrClosed", err)
	}
}
