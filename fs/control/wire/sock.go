package wire

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
)

// maxSunPath is the room for a path in a unix socket address (sun_path
// is 108 bytes with the NUL).
const maxSunPath = 107

// ListenUnix listens on a unix socket at path (the server's side). A path too long for
// sun_path (a deep data dir) is reached through /proc/self/fd/N of its
// directory, which the kernel resolves like any path.
func ListenUnix(path string) (net.Listener, error) {
	if len(path) <= maxSunPath {
		return net.Listen("unix", path)
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	return net.Listen("unix", shortPath(dir, path))
}

// DialUnix connects to the unix socket at path (see ListenUnix).
func DialUnix(path string) (net.Conn, error) {
	if len(path) <= maxSunPath {
		return net.Dial("unix", path)
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	return net.Dial("unix", shortPath(dir, path))
}

func shortPath(dir *os.File, path string) string {
	return fmt.Sprintf("/proc/self/fd/%s/%s", strconv.Itoa(int(dir.Fd())), filepath.Base(path))
}
