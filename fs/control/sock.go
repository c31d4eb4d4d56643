package control

import (
	"net"
	"os"
	"path/filepath"

	"github.com/vafs/vafs/fs/control/wire"
)

// listenUnix listens on a unix socket at path; a path too long for
// sun_path is reached as the client reaches it (wire.ShortPath).
func listenUnix(path string) (net.Listener, error) {
	if len(path) <= wire.MaxSunPath {
		return net.Listen("unix", path)
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	return net.Listen("unix", wire.ShortPath(dir, path))
}
