package control

import (
	"fmt"
	"path"
	"strings"

	"github.com/vafs/vafs/fs/control/wire"
)

// SnapshotDir is the root directory under which snapshots appear as files:
// SnapshotDir/<path of the file>/<name>.
const SnapshotDir = ".snapshots"

// cleanPath checks a path relative to the mount root and returns it
// cleaned ("" is the root). Absolute paths and ".." components are
// refused: the server never walks above the root, whatever the client
// sends.
func cleanPath(p string) (string, error) {
	if strings.HasPrefix(p, "/") {
		return "", invalidf("%q: paths are relative to the mount root, not absolute", p)
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "", invalidf("%q: NUL in path", p)
	}
	var parts []string
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "", ".":
		case "..":
			return "", invalidf("%q: \"..\" is not allowed in a path", p)
		default:
			parts = append(parts, c)
		}
	}
	return strings.Join(parts, "/"), nil
}

// inSnapshots reports whether a cleaned path is SnapshotDir or below it.
func inSnapshots(p string) bool {
	return p == SnapshotDir || strings.HasPrefix(p, SnapshotDir+"/")
}

// splitSnapshot splits a cleaned SnapshotDir/<file>/<name> path into the
// file's path and the snapshot name.
func splitSnapshot(p string) (file, name string, err error) {
	rest := strings.TrimPrefix(strings.TrimPrefix(p, SnapshotDir), "/")
	file, name = path.Split(rest)
	file = strings.TrimSuffix(file, "/")
	if file == "" || name == "" {
		return "", "", invalidf("%q is not a snapshot (%s/<path of the file>/<name>)", p, SnapshotDir)
	}
	return file, name, nil
}

// filePath cleans the path of an op that works on a file of the mount
// (not the root, not under SnapshotDir).
func filePath(p string) (string, error) {
	c, err := cleanPath(p)
	if err != nil {
		return "", err
	}
	if c == "" {
		return "", invalidf("the mount root is not a file")
	}
	if inSnapshots(c) {
		return "", &wire.Error{Kind: wire.KindReadOnly, Msg: fmt.Sprintf("%s is a snapshot or a snapshot directory, not a file of the mount", p)}
	}
	return c, nil
}

func invalidf(format string, a ...interface{}) *wire.Error {
	return &wire.Error{Kind: wire.KindInvalid, Msg: fmt.Sprintf(format, a...)}
}
