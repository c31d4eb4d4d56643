package control

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/vafs/vafs/fs"
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

// kinds maps fs sentinels to error kinds; the first match wins.
var kinds = []struct {
	err  error
	kind string
}{
	{fs.ErrExists, KindExists},
	{fs.ErrNotFound, KindNotFound},
	{fs.ErrNotDir, KindNotDir},
	{fs.ErrIsDir, KindIsDir},
	{fs.ErrBusy, KindBusy},
	{fs.ErrInvalid, KindInvalid},
	{fs.ErrNameTooLong, KindInvalid},
	{fs.ErrReadOnly, KindReadOnly},
	{fs.ErrNoSpace, KindNoSpace},
	{fs.ErrPerm, KindPerm},
	{fs.ErrNotSupported, KindUnsupported},
}

func kindOf(err error) string {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.kind
		}
	}
	return KindIO
}

// request is every op's arguments in one map; an op reads the fields it
// needs and ignores the others. Unknown fields are ignored too, so a newer
// client can add optional ones without a version bump.
type request struct {
	V     int    `msgpack:"v"`
	Op    string `msgpack:"op"`
	Src   string `msgpack:"src,omitempty"`
	Dst   string `msgpack:"dst,omitempty"`
	Path  string `msgpack:"path,omitempty"`
	Name  string `msgpack:"name,omitempty"`
	Force bool   `msgpack:"force,omitempty"`
}

// response is the answer to one request. Err is "" on success; Result is
// nil on error and for ops without a result.
type response struct {
	V      int         `msgpack:"v"`
	Err    string      `msgpack:"err"`
	Kind   string      `msgpack:"errkind"`
	Result interface{} `msgpack:"result"`
}

// rawResponse is how the client reads a response: the result is decoded
// once the op's result type is known.
type rawResponse struct {
	V      int                `msgpack:"v"`
	Err    string             `msgpack:"err"`
	Kind   string             `msgpack:"errkind"`
	Result msgpack.RawMessage `msgpack:"result"`
}

// Results.

type wireSnapshot struct {
	Name    string `msgpack:"name"`
	ID      uint64 `msgpack:"id"`
	Vol     uint64 `msgpack:"vol"`
	Created int64  `msgpack:"created"` // Unix nanoseconds
	Size    uint64 `msgpack:"size"`
	Blocks  uint64 `msgpack:"blocks"`
}

type wireClone struct {
	Ino uint64 `msgpack:"ino"`
}

type wireDescription struct {
	Ino          uint64         `msgpack:"ino"`
	Size         uint64         `msgpack:"size"`
	Allocated    uint64         `msgpack:"allocated"`
	Unique       uint64         `msgpack:"unique"`
	Shared       uint64         `msgpack:"shared"`
	SnapshotOnly uint64         `msgpack:"snapshot_only"`
	Origin       string         `msgpack:"origin"`
	Snapshots    []wireSnapshot `msgpack:"snapshots"`
}

type wireUsage struct {
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

type wireCompact struct {
	Segments int    `msgpack:"segments"`
	Moved    uint64 `msgpack:"moved"`
	Freed    uint64 `msgpack:"freed"`
}

// Frames.

var (
	errTooBig = fmt.Errorf("control: frame larger than %d bytes", MaxFrame)
	errEmpty  = errors.New("control: empty frame")
)

// readFrame reads one length-prefixed frame. It returns errTooBig without
// reading the body of an oversized frame, io.EOF on a clean end between
// frames and io.ErrUnexpectedEOF on a truncated one.
func readFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return nil, errTooBig
	}
	if n == 0 {
		return nil, errEmpty
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

// writeFrame encodes v with msgpack and writes it as one frame.
func writeFrame(w io.Writer, v interface{}) error {
	var buf bytes.Buffer
	buf.Write([]byte{0, 0, 0, 0})
	if err := msgpack.NewEncoder(&buf).Encode(v); err != nil {
		return err
	}
	b := buf.Bytes()
	if len(b)-4 > MaxFrame {
		return errTooBig
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	_, err := w.Write(b)
	return err
}

// decode decodes exactly one msgpack value from b into v: trailing bytes
// make the frame malformed.
func decode(b []byte, v interface{}) error {
	r := bytes.NewReader(b)
	if err := msgpack.NewDecoder(r).Decode(v); err != nil {
		return err
	}
	if r.Len() != 0 {
		return fmt.Errorf("%d bytes after the message", r.Len())
	}
	return nil
}

// decodeRequest decodes a request frame body. The version is checked
// before the rest is decoded, so that a newer client whose fields this
// server cannot decode still gets a version error. The error kind is
// KindProto or KindVersion.
func decodeRequest(b []byte) (request, *Error) {
	var hdr struct {
		V int `msgpack:"v"`
	}
	if err := decode(b, &hdr); err != nil {
		return request{}, &Error{Kind: KindProto, Msg: "malformed request: " + err.Error()}
	}
	if hdr.V != Version {
		return request{}, &Error{Kind: KindVersion, Msg: fmt.Sprintf("protocol version %d not supported (this mount speaks %d)", hdr.V, Version)}
	}
	var req request
	if err := decode(b, &req); err != nil {
		return request{}, &Error{Kind: KindProto, Msg: "malformed request: " + err.Error()}
	}
	return req, nil
}
