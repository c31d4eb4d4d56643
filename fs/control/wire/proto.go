package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/vafs/vafs/internal/msgpackcheck"
)

// Version is the protocol version carried in every frame's "v" field.
const Version = 1

// MaxFrame is the largest frame body either side accepts (1 MiB).
const MaxFrame = 1 << 20

// Ops, as they appear in a request's "op" field.
const (
	OpClone            = "clone"
	OpSnapshotCreate   = "snapshot_create"
	OpSnapshotList     = "snapshot_list"
	OpSnapshotDelete   = "snapshot_delete"
	OpSnapshotRollback = "snapshot_rollback"
	OpDescribe         = "describe"
	OpDF               = "df"
	OpCompact          = "compact"
)

// Error kinds, as they appear in a response's "errkind" field.
const (
	KindProto       = "proto"       // malformed or oversized frame (the server closes the connection)
	KindVersion     = "version"     // "v" missing or not Version (the server closes the connection)
	KindUnknownOp   = "unknown_op"  // "op" is not one this server knows
	KindInvalid     = "invalid"     // a bad argument: path with "..", bad name, not a regular file
	KindExists      = "exists"      // the name is taken
	KindNotFound    = "notfound"    // no such file, directory or snapshot
	KindNotDir      = "notdir"      // a path component is not a directory
	KindIsDir       = "isdir"       // a directory where a file is needed
	KindBusy        = "busy"        // the file is open for writing (rollback without force)
	KindReadOnly    = "readonly"    // a change under .snapshots
	KindNoSpace     = "nospace"     // the data dir is full
	KindPerm        = "perm"        // not permitted
	KindUnsupported = "unsupported" // the engine does not implement the operation
	KindIO          = "io"          // anything else: I/O failure, corruption, internal error
)

// Error is an error answered by the server: Kind is one of the Kind
// constants, Msg the text for the user. A client must treat a Kind it does
// not know like KindIO.
type Error struct {
	Kind string
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// IsKind reports whether err is, or wraps, an *Error of the given kind.
func IsKind(err error, kind string) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == kind
}

// Request is every op's arguments in one map; an op reads the fields it
// needs and ignores the others. Unknown fields are ignored too, so a newer
// client can add optional ones without a version bump.
type Request struct {
	V     int    `msgpack:"v"`
	Op    string `msgpack:"op"`
	Src   string `msgpack:"src,omitempty"`
	Dst   string `msgpack:"dst,omitempty"`
	Path  string `msgpack:"path,omitempty"`
	Name  string `msgpack:"name,omitempty"`
	Force bool   `msgpack:"force,omitempty"`
}

// Response is the answer to one request, as the server writes it. Err is
// "" on success; Result is nil on error and for ops without a result.
type Response struct {
	V      int         `msgpack:"v"`
	Err    string      `msgpack:"err"`
	Kind   string      `msgpack:"errkind"`
	Result interface{} `msgpack:"result"`
}

// RawResponse is how the client reads a response: the result is decoded
// once the op's result type is known.
type RawResponse struct {
	V      int                `msgpack:"v"`
	Err    string             `msgpack:"err"`
	Kind   string             `msgpack:"errkind"`
	Result msgpack.RawMessage `msgpack:"result"`
}

// Results: the "result" of each op, field for field as on the wire.

// Snapshot is a snapshot map (snapshot_create, snapshot_list, describe).
type Snapshot struct {
	Name    string `msgpack:"name"`
	ID      uint64 `msgpack:"id"`
	Vol     uint64 `msgpack:"vol"`
	Created int64  `msgpack:"created"` // Unix nanoseconds
	Size    uint64 `msgpack:"size"`
	Blocks  uint64 `msgpack:"blocks"` // mapped BlockSize blocks
}

// BlockSize is the unit of Snapshot.Blocks (4 KiB, fs.BlockSize).
const BlockSize = 4096

// CreatedTime is Created as a time; the zero time if unknown (0).
func (s Snapshot) CreatedTime() time.Time {
	if s.Created == 0 {
		return time.Time{}
	}
	return time.Unix(0, s.Created)
}

// Clone is clone's result.
type Clone struct {
	Ino uint64 `msgpack:"ino"`
}

// Description is describe's result.
type Description struct {
	Ino          uint64     `msgpack:"ino"`
	Size         uint64     `msgpack:"size"`
	Allocated    uint64     `msgpack:"allocated"`
	Unique       uint64     `msgpack:"unique"`
	Shared       uint64     `msgpack:"shared"`
	SnapshotOnly uint64     `msgpack:"snapshot_only"`
	Origin       string     `msgpack:"origin"`
	Snapshots    []Snapshot `msgpack:"snapshots"`
}

// Usage is df's result.
type Usage struct {
	Files           int    `msgpack:"files"`
	Snapshots       int    `msgpack:"snapshots"`
	Logical         uint64 `msgpack:"logical"`
	SnapshotLogical uint64 `msgpack:"snapshot_logical"`
	Physical        uint64 `msgpack:"physical"`
	Saved           uint64 `msgpack:"saved"`
	Stored          uint64 `msgpack:"stored"`
	Metadata        uint64 `msgpack:"metadata"`
	Segments        int    `msgpack:"segments"`
}

// Compaction is compact's result.
type Compaction struct {
	Segments int    `msgpack:"segments"`
	Moved    uint64 `msgpack:"moved"`
	Freed    uint64 `msgpack:"freed"`
}

// Frames.

// Errors of ReadFrame.
var (
	ErrTooBig = fmt.Errorf("control: frame larger than %d bytes", MaxFrame)
	ErrEmpty  = errors.New("control: empty frame")
)

// ReadFrame reads one length-prefixed frame. It returns ErrTooBig without
// reading the body of an oversized frame, io.EOF on a clean end between
// frames and io.ErrUnexpectedEOF on a truncated one.
func ReadFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return nil, ErrTooBig
	}
	if n == 0 {
		return nil, ErrEmpty
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// WriteFrame encodes v with msgpack and writes it as one frame.
func WriteFrame(w io.Writer, v interface{}) error {
	var buf bytes.Buffer
	buf.Write([]byte{0, 0, 0, 0})
	if err := msgpack.NewEncoder(&buf).Encode(v); err != nil {
		return err
	}
	b := buf.Bytes()
	if len(b)-4 > MaxFrame {
		return ErrTooBig
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	_, err := w.Write(b)
	return err
}

// Decode decodes exactly one msgpack value from b into v: trailing bytes
// make the frame malformed. The value's structure is checked first
// (msgpackcheck.Check), so that what msgpack allocates is bounded by len(b).
func Decode(b []byte, v interface{}) error {
	if err := msgpackcheck.Check(b); err != nil {
		return err
	}
	r := bytes.NewReader(b)
	if err := msgpack.NewDecoder(r).Decode(v); err != nil {
		return err
	}
	if r.Len() != 0 {
		return fmt.Errorf("%d bytes after the message", r.Len())
	}
	return nil
}

// DecodeRequest decodes a request frame body. The version is checked
// before the rest is decoded, so that a newer client whose fields this
// server cannot decode still gets a version error. The error kind is
// KindProto or KindVersion.
func DecodeRequest(b []byte) (Request, *Error) {
	var hdr struct {
		V int `msgpack:"v"`
	}
	if err := Decode(b, &hdr); err != nil {
		return Request{}, &Error{Kind: KindProto, Msg: "malformed request: " + err.Error()}
	}
	if hdr.V != Version {
		return Request{}, &Error{Kind: KindVersion, Msg: fmt.Sprintf("protocol version %d not supported (this mount speaks %d)", hdr.V, Version)}
	}
	var req Request
	if err := Decode(b, &req); err != nil {
		return Request{}, &Error{Kind: KindProto, Msg: "malformed request: " + err.Error()}
	}
	return req, nil
}
