package control

import (
	"errors"

	"github.com/vafs/vafs/fs"
	"github.com/vafs/vafs/fs/control/wire"
)

// SocketName is the control socket's file name in the data dir.
const SocketName = wire.SocketName

// kinds maps fs sentinels to error kinds (docs/control-socket.md); the
// first match wins.
var kinds = []struct {
	err  error
	kind string
}{
	{fs.ErrExists, wire.KindExists},
	{fs.ErrNotFound, wire.KindNotFound},
	{fs.ErrNotDir, wire.KindNotDir},
	{fs.ErrIsDir, wire.KindIsDir},
	{fs.ErrBusy, wire.KindBusy},
	{fs.ErrInvalid, wire.KindInvalid},
	{fs.ErrNameTooLong, wire.KindInvalid},
	{fs.ErrReadOnly, wire.KindReadOnly},
	{fs.ErrNoSpace, wire.KindNoSpace},
	{fs.ErrPerm, wire.KindPerm},
	{fs.ErrNotSupported, wire.KindUnsupported},
}

func kindOf(err error) string {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.kind
		}
	}
	return wire.KindIO
}

// AsFS makes an error answered by a mount (a *wire.Error in err's chain)
// match the fs sentinel of its kind, for Go callers that link fs anyway:
// errors.Is(control.AsFS(err), fs.ErrBusy). Other errors come back as
// they are. (wire cannot do it itself: it must not import fs.)
func AsFS(err error) error {
	var e *wire.Error
	if !errors.As(err, &e) {
		return err
	}
	return &fsError{e}
}

// fsError is a *wire.Error that errors.Is matches against fs sentinels.
type fsError struct{ e *wire.Error }

func (e *fsError) Error() string { return e.e.Msg }
func (e *fsError) Unwrap() error { return e.e }

// Is reports whether target is an fs sentinel of e's kind.
func (e *fsError) Is(target error) bool {
	for _, k := range kinds {
		if k.kind == e.e.Kind && k.err == target {
			return true
		}
	}
	return false
}
