package control

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/fs"
	"github.com/vafs/vafs/fs/control/wire"
	"github.com/vafs/vafs/meta"
)

// testLog collects the server's log so that a test can show it on failure.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func openFS(t *testing.T) *fs.FS {
	t.Helper()
	f, err := fs.Open(fs.Options{DataDir: t.TempDir(), Store: blocks.NewMemStore(), MemMeta: true,
		// No write-back cache: the compaction round trip needs its
		// overwrites to leave dead records, which the cache would coalesce.
		Logger: log.New(io.Discard, "", 0), SegmentBlocks: 64, WriteCache: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// start serves e on a socket in a fresh temp dir and returns the data dir.
func start(t *testing.T, e engine) (*Server, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := serve(e, filepath.Join(dir, SocketName), log.New(testLog{t}, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func rawConn(t *testing.T, dir string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", filepath.Join(dir, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(2 * time.Minute)) // a wedged server fails the test instead of hanging it
	t.Cleanup(func() { c.Close() })
	return c
}

func frame(body []byte) []byte {
	b := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(b, uint32(len(body)))
	copy(b[4:], body)
	return b
}

func mp(t *testing.T, v interface{}) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readResp(t *testing.T, c net.Conn) wire.RawResponse {
	t.Helper()
	b, err := wire.ReadFrame(c)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	var r wire.RawResponse
	if err := wire.Decode(b, &r); err != nil {
		t.Fatalf("undecodable response: %v", err)
	}
	if r.V != wire.Version {
		t.Fatalf("response version %d", r.V)
	}
	return r
}

// wantClosed checks that the server closed the connection.
func wantClosed(t *testing.T, c net.Conn) {
	t.Helper()
	var b [1]byte
	n, err := c.Read(b[:])
	if err == nil || n != 0 {
		t.Fatalf("connection still open (read %d, %v)", n, err)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read after error response: %v, want EOF", err)
	}
}

func TestMalformedFrame(t *testing.T) {
	_, dir := start(t, openFS(t))
	for name, body := range map[string][]byte{
		"not msgpack":     {0xc1, 0xc1, 0xc1},
		"truncated map":   mp(t, map[string]interface{}{"v": 1, "op": "df"})[:5],
		"trailing bytes":  append(mp(t, map[string]interface{}{"v": 1, "op": "df"}), 0x00),
		"not a map":       mp(t, "hello"),
		"v not a number":  mp(t, map[string]interface{}{"v": "one", "op": "df"}),
		"op not a string": mp(t, map[string]interface{}{"v": 1, "op": 7}),
	} {
		t.Run(name, func(t *testing.T) {
			c := rawConn(t, dir)
			if _, err := c.Write(frame(body)); err != nil {
				t.Fatal(err)
			}
			r := readResp(t, c)
			if r.Kind != wire.KindProto || !strings.Contains(r.Err, "malformed") {
				t.Fatalf("got %q (%s), want a %s error", r.Err, r.Kind, wire.KindProto)
			}
			wantClosed(t, c)
		})
	}
}

func TestOversizedAndEmptyFrame(t *testing.T) {
	_, dir := start(t, openFS(t))
	for name, hdr := range map[string]uint32{"oversized": wire.MaxFrame + 1, "huge": 0xffffffff, "empty": 0} {
		t.Run(name, func(t *testing.T) {
			c := rawConn(t, dir)
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], hdr)
			// The body is never sent: the server must answer from the
			// header alone, not wait for 4 GiB.
			if _, err := c.Write(b[:]); err != nil {
				t.Fatal(err)
			}
			r := readResp(t, c)
			if r.Kind != wire.KindProto {
				t.Fatalf("got %q (%s), want %s", r.Err, r.Kind, wire.KindProto)
			}
			wantClosed(t, c)
		})
	}
}

func TestWrongVersion(t *testing.T) {
	_, dir := start(t, openFS(t))
	for name, req := range map[string]map[string]interface{}{
		"v2":         {"v": 2, "op": "df"},
		"v0":         {"v": 0, "op": "df"},
		"missing v":  {"op": "df"},
		"v2 new ops": {"v": 2, "op": "df", "path": 12, "force": "yes"}, // fields v1 cannot decode
	} {
		t.Run(name, func(t *testing.T) {
			c := rawConn(t, dir)
			c.Write(frame(mp(t, req)))
			r := readResp(t, c)
			if r.Kind != wire.KindVersion || !strings.Contains(r.Err, "version") {
				t.Fatalf("got %q (%s), want a %s error", r.Err, r.Kind, wire.KindVersion)
			}
			wantClosed(t, c)
		})
	}
}

// An unknown op is an error for that request only: the connection goes
// on serving.
func TestUnknownOp(t *testing.T) {
	_, dir := start(t, openFS(t))
	c := rawConn(t, dir)
	for _, op := range []string{"format_disk", "", strings.Repeat("x", 10000)} {
		c.Write(frame(mp(t, map[string]interface{}{"v": 1, "op": op})))
		r := readResp(t, c)
		if r.Kind != wire.KindUnknownOp {
			t.Fatalf("op %.20q: got %q (%s), want %s", op, r.Err, r.Kind, wire.KindUnknownOp)
		}
		if len(r.Err) > 200 {
			t.Fatalf("error echoes the whole op: %d bytes", len(r.Err))
		}
	}
}

func TestBadPaths(t *testing.T) {
	_, dir := start(t, openFS(t))
	cl, err := wire.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	check := func(what string, err error, kind string) {
		t.Helper()
		var e *wire.Error
		if !errors.As(err, &e) || e.Kind != kind {
			t.Errorf("%s: got %v, want a %s error", what, err, kind)
		}
	}
	_, err = cl.Clone("../etc", "x")
	check("clone ../etc", err, wire.KindInvalid)
	if err != nil && !strings.Contains(err.Error(), `".."`) {
		t.Errorf("message does not say why: %v", err)
	}
	_, err = cl.Clone("a", "b/../../x")
	check("clone to b/../../x", err, wire.KindInvalid)
	_, err = cl.Clone("/etc/passwd", "x")
	check("clone /etc/passwd", err, wire.KindInvalid)
	if err != nil && !strings.Contains(err.Error(), "absolute") {
		t.Errorf("message does not say why: %v", err)
	}
	_, err = cl.SnapshotCreate("vms/../../a.raw", "s1")
	check("snapshot create with ..", err, wire.KindInvalid)
	_, err = cl.Snapshots("/vms/a.raw")
	check("snapshot list of an absolute path", err, wire.KindInvalid)
	check("snapshot delete with ..", cl.SnapshotDelete("..", "s1"), wire.KindInvalid)
	check("rollback with ..", cl.SnapshotRollback("a/..", "s1", false), wire.KindInvalid)
	_, err = cl.Describe("../../x")
	check("describe with ..", err, wire.KindInvalid)
	_, err = cl.Describe("")
	check("describe the root", err, wire.KindInvalid)
	_, err = cl.Clone("a", ".snapshots/a/s2")
	check("clone into .snapshots", err, wire.KindReadOnly)
	_, err = cl.SnapshotCreate(".snapshots/a/s1", "s2")
	check("snapshot of a snapshot", err, wire.KindReadOnly)
	_, err = cl.Clone(".snapshots/a", "x")
	check("clone of a .snapshots directory", err, wire.KindInvalid)
	_, err = cl.Clone("", "x")
	check("clone of the root", err, wire.KindInvalid)
}

func TestSocketFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, SocketName)
	// A stale file (a socket of a killed mount, or anything) is replaced.
	if err := os.WriteFile(path, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Serve(openFS(t), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a socket with 0600", st.Mode())
	}
	cl, err := wire.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	cl.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind after Close: %v", err)
	}
	if _, err := wire.Dial(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Dial after Close: %v, want an error naming the data dir", err)
	}
}

// A data dir whose socket path does not fit in sun_path still works.
func TestLongSocketPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if len(filepath.Join(dir, SocketName)) <= wire.MaxSunPath {
		t.Fatal("path not long enough for the test")
	}
	s, err := Serve(openFS(t), filepath.Join(dir, SocketName), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cl, err := wire.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Any answer proves the round trip; an unknown op is the cheapest.
	err = cl.Call(wire.Request{Op: "nop"}, nil)
	var e *wire.Error
	if !errors.As(err, &e) || e.Kind != wire.KindUnknownOp {
		t.Fatalf("got %v, want an %s answer", err, wire.KindUnknownOp)
	}
}

// panicky is an engine that panics in every call.
type panicky struct{ engine }

func (panicky) Usage() (fs.Usage, error)       { panic("boom") }
func (panicky) Resolve(string) (uint64, error) { var m map[string]int; m["x"] = 1; return 0, nil }
func (panicky) Compact() (fs.CompactStats, error) {
	return fs.CompactStats{}, errors.New("disk on fire")
}

// A panic while serving is answered, logged, and leaves the server up.
func TestPanicIsAnswered(t *testing.T) {
	_, dir := start(t, panicky{})
	cl, err := wire.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 0; i < 2; i++ {
		_, err = cl.Usage()
		var e *wire.Error
		if !errors.As(err, &e) || e.Kind != wire.KindIO || !strings.Contains(e.Msg, "internal error") {
			t.Fatalf("got %v, want an internal error", err)
		}
		_, err = cl.Describe("a")
		if !errors.As(err, &e) || e.Kind != wire.KindIO {
			t.Fatalf("got %v, want an internal error", err)
		}
	}
	_, err = cl.Compact()
	var e *wire.Error
	if !errors.As(err, &e) || e.Kind != wire.KindIO || e.Msg != "disk on fire" {
		t.Fatalf("got %v, want the engine's error as %s", err, wire.KindIO)
	}
	cl2, err := wire.Dial(dir)
	if err != nil {
		t.Fatalf("server gone after panics: %v", err)
	}
	cl2.Close()
}

// Close waits for a request in progress and answers it.
type slow struct {
	engine
	started chan struct{}
	release chan struct{}
}

func (s slow) Usage() (fs.Usage, error) {
	close(s.started)
	<-s.release
	return fs.Usage{Files: 42}, nil
}

func TestCloseWaitsForRequests(t *testing.T) {
	e := slow{started: make(chan struct{}), release: make(chan struct{})}
	s, dir := start(t, e)
	idle := rawConn(t, dir) // an idle connection must not hold Close up
	_ = idle
	cl, err := wire.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := make(chan error, 1)
	go func() {
		u, err := cl.Usage()
		if err == nil && u.Files != 42 {
			err = errors.New("wrong answer")
		}
		got <- err
	}()
	<-e.started
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while a request was being served")
	case <-time.After(100 * time.Millisecond):
		// Not a timing assertion on the pass path: a slow machine only
		// makes this check weaker, never fail wrongly.
	}
	close(e.release)
	if err := <-got; err != nil {
		t.Fatalf("request in progress during Close: %v", err)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Close hangs")
	}
}

// AsFS lets a Go caller match an answered error against fs sentinels,
// through wrapping, and keeps its text.
func TestAsFS(t *testing.T) {
	for kind, target := range map[string]error{wire.KindBusy: fs.ErrBusy, wire.KindExists: fs.ErrExists, wire.KindNotFound: fs.ErrNotFound,
		wire.KindInvalid: fs.ErrNameTooLong} {
		err := AsFS(fmt.Errorf("op: %w", &wire.Error{Kind: kind, Msg: "x"}))
		if !errors.Is(err, target) {
			t.Errorf("%s is not %v", kind, target)
		}
		if errors.Is(err, fs.ErrCorrupt) {
			t.Errorf("%s is %v", kind, fs.ErrCorrupt)
		}
		if !wire.IsKind(err, kind) || err.Error() != "x" {
			t.Errorf("%s: %v lost its kind or text", kind, err)
		}
	}
	if plain := errors.New("plain"); AsFS(plain) != plain {
		t.Error("AsFS changed an error that is not an answer")
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(mpF(map[string]interface{}{"v": 1, "op": "clone", "src": "a", "dst": "b"}))
	f.Add(mpF(map[string]interface{}{"v": 1, "op": "snapshot_rollback", "path": "a", "name": "s", "force": true}))
	f.Add(mpF(map[string]interface{}{"v": 2}))
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0xdd, 0x7f, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := wire.DecodeRequest(b)
		if err != nil {
			if err.Kind != wire.KindProto && err.Kind != wire.KindVersion {
				t.Fatalf("kind %s", err.Kind)
			}
			return
		}
		if req.V != wire.Version {
			t.Fatalf("accepted version %d", req.V)
		}
		// Whatever decodes must get through path checking without panic.
		cleanPath(req.Src)
		if c, err := cleanPath(req.Path); err == nil && inSnapshots(c) {
			splitSnapshot(c)
		}
	})
}

func mpF(v interface{}) []byte {
	b, _ := msgpack.Marshal(v)
	return b
}

var _ = meta.RootIno

// Keys a v1 server does not know are ignored (docs/control-socket.md), so
// that optional fields can be added without a version bump.
func TestUnknownFieldsIgnored(t *testing.T) {
	_, dir := start(t, openFS(t))
	c := rawConn(t, dir)
	c.Write(frame(mp(t, map[string]interface{}{"v": 1, "op": "snapshot_list", "path": "", "future": []int{1, 2}})))
	r := readResp(t, c)
	if r.Kind != wire.KindInvalid || !strings.Contains(r.Err, "root") {
		t.Fatalf("got %q (%s), want the op's own %s error", r.Err, r.Kind, wire.KindInvalid)
	}
}

// wire cannot import fs, so it states the unit of Snapshot.Blocks itself.
func TestWireBlockSize(t *testing.T) {
	if wire.BlockSize != fs.BlockSize {
		t.Fatalf("wire.BlockSize %d, fs.BlockSize %d", wire.BlockSize, fs.BlockSize)
	}
}
