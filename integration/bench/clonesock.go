package main

// The clone's own cost, without a process start-up: the same request the
// CLI sends, over the mount's control socket (fs/control/wire), on a
// connection opened once. This is the one place the bench links vafs code:
// the socket's format is vafs's own (docs/format.md "Control socket").

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/vafs/vafs/fs/control/wire"
)

// socketCloner clones files of one mount over its control socket.
type socketCloner struct {
	m *vafsMount
	c *wire.Client
}

func dialMount(m *vafsMount) (*socketCloner, error) {
	c, err := wire.Dial(m.data)
	if err != nil {
		return nil, err
	}
	return &socketCloner{m: m, c: c}, nil
}

func (s *socketCloner) close() { s.c.Close() }

// clone clones src to dst (paths under the mount) and returns how long the
// request took, round trip included.
func (s *socketCloner) clone(src, dst string) (time.Duration, error) {
	rs, err := filepath.Rel(s.m.mnt, src)
	if err != nil {
		return 0, err
	}
	rd, err := filepath.Rel(s.m.mnt, dst)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := s.c.Clone(rs, rd); err != nil {
		return 0, fmt.Errorf("control socket clone %s %s: %w", rs, rd, err)
	}
	return time.Since(start), nil
}
