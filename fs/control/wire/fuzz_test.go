package wire

// Fuzz targets for the control socket's frames (docs/control-socket.md):
// the length-prefixed framing, read both from a plain reader that returns
// short reads and through the client's socket (sockConn), and the msgpack
// bodies both sides decode (requests, responses and each op's result).
// Arbitrary input either fails as documented or decodes to a value that
// re-encodes to the same value; a value built from the fuzzer's input
// survives a frame round trip; nothing allocates more than a small multiple
// of its input. `go test` runs them on their seeds and on
// testdata/fuzz/<FuzzName>/; `just fuzz` runs each for a while.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"runtime/metrics"
	"syscall"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/vafs/vafs/internal/msgpackcheck"
)

func allocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// checkAlloc fails if decode allocated more than limit bytes plus slack for
// the allocator's bookkeeping.
func checkAlloc(t *testing.T, limit uint64, decode func()) {
	t.Helper()
	before := allocated()
	decode()
	if a := allocated() - before; a > limit+1<<20 {
		t.Fatalf("decoding allocated %d bytes (limit %d)", a, limit)
	}
}

// decodeLimit: a body of n bytes may decode to at most n values, each a
// few words.
func decodeLimit(n int) uint64 { return 128 * uint64(n) }

func frameOf(tb testing.TB, v interface{}) []byte {
	var b bytes.Buffer
	if err := WriteFrame(&b, v); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func bodyOf(tb testing.TB, v interface{}) []byte { return frameOf(tb, v)[4:] }

// shortReader returns at most step bytes per Read.
type shortReader struct {
	b    []byte
	step int
}

func (r *shortReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.step)], r.b)
	r.b = r.b[n:]
	return n, nil
}

type frameResult struct {
	frames [][]byte
	err    error
}

// readFrames reads frames until the first error.
func readFrames(t *testing.T, r io.Reader) frameResult {
	var res frameResult
	for {
		var b []byte
		var err error
		checkAlloc(t, MaxFrame, func() { b, err = ReadFrame(r) })
		if err != nil {
			res.err = err
			return res
		}
		res.frames = append(res.frames, b)
	}
}

// expectFrames is what ReadFrame must make of stream, from docs/control-socket.md,
// and how many bytes it may consume.
func expectFrames(stream []byte) (frameResult, int) {
	var res frameResult
	p := 0
	for {
		rest := stream[p:]
		switch {
		case len(rest) == 0:
			res.err = io.EOF
			return res, p
		case len(rest) < 4:
			res.err = io.ErrUnexpectedEOF
			return res, len(stream)
		}
		n := binary.BigEndian.Uint32(rest)
		switch {
		case n > MaxFrame:
			res.err = ErrTooBig // without reading the body
			return res, p + 4
		case n == 0:
			res.err = ErrEmpty
			return res, p + 4
		case uint64(len(rest)-4) < uint64(n):
			res.err = io.ErrUnexpectedEOF
			return res, len(stream)
		}
		res.frames = append(res.frames, rest[4:4+n])
		p += 4 + int(n)
	}
}

func sameFrames(a, b frameResult) bool {
	if !errors.Is(a.err, b.err) || len(a.frames) != len(b.frames) {
		return false
	}
	for i := range a.frames {
		if !bytes.Equal(a.frames[i], b.frames[i]) {
			return false
		}
	}
	return true
}

// viaSocket writes stream into one end of a unix socket pair and reads
// frames from the other end through the client's sockConn.
func viaSocket(t *testing.T, stream []byte) frameResult {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	r, w := &sockConn{fd: fds[0], name: "r"}, &sockConn{fd: fds[1], name: "w"}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Write(stream) // EPIPE once the reader stops at an error: fine
		w.Close()
	}()
	res := readFrames(t, r)
	r.Close()
	<-done
	return res
}

func FuzzReadFrame(f *testing.F) {
	req := frameOf(f, Request{V: Version, Op: OpSnapshotCreate, Path: "vms/a.raw", Name: "s1"})
	resp := frameOf(f, Response{V: Version, Result: []Snapshot{{Name: "s1", ID: 1, Vol: 2, Created: 3, Size: 4, Blocks: 5}}})
	big := make([]byte, 4)
	binary.BigEndian.PutUint32(big, MaxFrame+1)
	most := make([]byte, 4)
	binary.BigEndian.PutUint32(most, MaxFrame)
	for _, s := range [][]byte{
		{}, req, append(bytes.Clone(req), resp...), req[:3], req[:4], req[:len(req)-1],
		{0, 0, 0, 0}, append(bytes.Clone(req), 0, 0, 0, 0), big, append(big, req...), most,
		{0xff, 0xff, 0xff, 0xff}, {0, 0, 0, 1, 0xc0},
	} {
		f.Add(s, uint8(0))
		f.Add(s, uint8(2))
	}
	f.Fuzz(func(t *testing.T, stream []byte, step uint8) {
		want, consumed := expectFrames(stream)
		r := &shortReader{b: stream, step: 1 + int(step)}
		got := readFrames(t, r)
		if !sameFrames(got, want) {
			t.Fatalf("read %d frames then %v, want %d frames then %v", len(got.frames), got.err, len(want.frames), want.err)
		}
		if used := len(stream) - len(r.b); used > consumed {
			t.Fatalf("read %d bytes, want at most %d (the body of a refused frame is not read)", used, consumed)
		}
		if got := viaSocket(t, stream); !sameFrames(got, want) {
			t.Fatalf("through the socket: %d frames then %v, want %d frames then %v", len(got.frames), got.err, len(want.frames), want.err)
		}
	})
}

func FuzzRequest(f *testing.F) {
	for _, r := range []Request{
		{V: Version, Op: OpClone, Src: ".snapshots/vms/a.raw/s1", Dst: "vms/b.raw"},
		{V: Version, Op: OpSnapshotRollback, Path: "a", Name: "s", Force: true},
		{V: Version, Op: OpDF},
		{V: Version + 1, Op: "future"},
	} {
		b := bodyOf(f, r)
		f.Add(b, r.Op, r.Src, r.Path, r.Force)
		f.Add(b[:len(b)-1], "", "", "", false)
		f.Add(append(bytes.Clone(b), 0xc0), "", "", "", false)
	}
	f.Add(mustMarshal(f, map[string]interface{}{"v": 1, "op": "snapshot_list", "path": "", "future": []interface{}{1, "x", map[string]int{"a": 1}}}), "", "", "", false)
	f.Add(mustMarshal(f, map[string]interface{}{"op": "df"}), "", "", "", false) // no version
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff}, "", "", "", false)
	f.Fuzz(func(t *testing.T, b []byte, op, path, name string, force bool) {
		var req Request
		var perr *Error
		checkAlloc(t, decodeLimit(len(b)), func() { req, perr = DecodeRequest(b) })
		if perr != nil {
			if perr.Kind != KindProto && perr.Kind != KindVersion {
				t.Fatalf("error kind %q (%s)", perr.Kind, perr.Msg)
			}
		} else {
			if req.V != Version {
				t.Fatalf("accepted version %d", req.V)
			}
			again, perr := DecodeRequest(bodyOf(t, req))
			if perr != nil || again != req {
				t.Fatalf("decoded %+v, re-encoded and decoded %+v (%v)", req, again, perr)
			}
		}

		want := Request{V: Version, Op: op, Src: path + "/" + name, Dst: name, Path: path, Name: name, Force: force}
		fr := frameOf(t, want)
		body, err := ReadFrame(bytes.NewReader(fr))
		if err != nil {
			t.Fatal(err)
		}
		if got, perr := DecodeRequest(body); perr != nil || got != want {
			t.Fatalf("sent %+v, received %+v (%v)", want, got, perr)
		}
		want.V = Version + 1
		if _, perr := DecodeRequest(bodyOf(t, want)); perr == nil || perr.Kind != KindVersion {
			t.Fatalf("version %d: %v", want.V, perr)
		}
	})
}

func mustMarshal(tb testing.TB, v interface{}) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// fixpoint decodes b into a new T: if that succeeds, the value must
// re-encode to a body that decodes to the same value.
func fixpoint[T any](t *testing.T, b []byte) {
	t.Helper()
	var v T
	var err error
	checkAlloc(t, decodeLimit(len(b)), func() { err = Decode(b, &v) })
	if err != nil {
		return
	}
	var again T
	if err := Decode(mustMarshal(t, &v), &again); err != nil {
		t.Fatalf("%T %+v re-encoded: %v", v, v, err)
	}
	if !reflect.DeepEqual(v, again) {
		t.Fatalf("decoded %+v, re-encoded and decoded %+v", v, again)
	}
}

// results decodes b as each op's result, as the client does.
func results(t *testing.T, b []byte) {
	fixpoint[Clone](t, b)
	fixpoint[Snapshot](t, b)
	fixpoint[[]Snapshot](t, b)
	fixpoint[Description](t, b)
	fixpoint[Usage](t, b)
	fixpoint[Compaction](t, b)
}

func FuzzResponse(f *testing.F) {
	snaps := []Snapshot{{Name: "s1", ID: 1, Vol: 2, Created: 1764580000123456789, Size: 1 << 34, Blocks: 12}, {Name: "nightly-2025-12-01", ID: 1<<64 - 1}}
	for _, r := range []Response{
		{V: Version, Result: Clone{Ino: 42}},
		{V: Version, Result: snaps[0]},
		{V: Version, Result: snaps},
		{V: Version, Result: []Snapshot{}},
		{V: Version, Result: Description{Ino: 2, Size: 1 << 34, Allocated: 1, Unique: 2, Shared: 3, SnapshotOnly: 4, Origin: "vms/a.raw@s1", Snapshots: snaps}},
		{V: Version, Result: Usage{Files: 3, Snapshots: 2, Logical: 1, SnapshotLogical: 2, Physical: 3, Saved: 4, Stored: 5, Metadata: 6, Segments: 7}},
		{V: Version, Result: Compaction{Segments: 1, Moved: 2, Freed: 3}},
		{V: Version, Err: "snapshot \"s1\" exists", Kind: KindExists},
		{V: Version},
	} {
		b := bodyOf(f, r)
		f.Add(b, "s", uint64(1), uint8(2))
		f.Add(b[:len(b)-1], "", uint64(0), uint8(0))
	}
	f.Fuzz(func(t *testing.T, b []byte, name string, n uint64, count uint8) {
		// As the client reads an answer, then its result.
		var resp RawResponse
		var err error
		checkAlloc(t, decodeLimit(len(b)), func() { err = Decode(b, &resp) })
		if err == nil {
			var again RawResponse
			if err := Decode(mustMarshal(t, &resp), &again); err != nil || !reflect.DeepEqual(resp, again) {
				t.Fatalf("decoded %+v, re-encoded and decoded %+v (%v)", resp, again, err)
			}
			if len(resp.Result) > 0 {
				results(t, resp.Result)
			}
		}
		results(t, b)

		// What the server writes, the client reads.
		d := Description{Ino: n, Size: n << 12, Allocated: n >> 1, Unique: n >> 2, Shared: n >> 3, SnapshotOnly: n >> 4, Origin: name}
		for i := 0; i < int(count%16); i++ {
			d.Snapshots = append(d.Snapshots, Snapshot{Name: name, ID: n + uint64(i), Vol: n, Created: int64(n), Size: n << 12, Blocks: n >> 12})
		}
		body, err := ReadFrame(bytes.NewReader(frameOf(t, Response{V: Version, Result: d})))
		if err != nil {
			t.Fatal(err)
		}
		var raw RawResponse
		var got Description
		if err := Decode(body, &raw); err != nil || raw.V != Version || raw.Err != "" {
			t.Fatalf("response %+v: %v", raw, err)
		}
		if err := Decode(raw.Result, &got); err != nil || !reflect.DeepEqual(got, d) {
			t.Fatalf("sent %+v, received %+v (%v)", d, got, err)
		}
	})
}

// stackBytes is the memory the runtime holds for goroutine stacks.
func stackBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// A frame of nested arrays is refused before msgpack recurses into it:
// decoding (or skipping, as an unknown field) recursed once per byte, ~250
// bytes of stack each, so a 1 MiB frame took ~250 MiB of stack.
func TestDecodeNesting(t *testing.T) {
	b := []byte{0x82, 0xa1, 'v', 1, 0xa6, 'f', 'u', 't', 'u', 'r', 'e'}
	b = append(b, bytes.Repeat([]byte{0x91}, MaxFrame-len(b)-1)...)
	b = append(b, 0xc0)
	before := stackBytes()
	var perr *Error
	checkAlloc(t, 0, func() { _, perr = DecodeRequest(b) })
	if grown := stackBytes() - min(before, stackBytes()); grown > 16<<20 {
		t.Errorf("decoding a nested frame grew the stacks by %d bytes", grown)
	}
	if perr == nil || perr.Kind != KindProto {
		t.Fatalf("a frame nested %d deep: %v, want a %s error", len(b), perr, KindProto)
	}
	// As deep as the limit is fine.
	ok := append([]byte{0x82, 0xa1, 'v', 1, 0xa6, 'f', 'u', 't', 'u', 'r', 'e'}, bytes.Repeat([]byte{0x91}, msgpackcheck.MaxDepth-1)...)
	if _, perr := DecodeRequest(append(ok, 0xc0)); perr != nil {
		t.Fatalf("a request nested %d deep: %v", msgpackcheck.MaxDepth, perr)
	}
}
