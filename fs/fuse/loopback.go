package fuse

// The loopback mount is not part of vafs: it is the yardstick. It serves a
// plain directory through go-fuse with the same mount options vafs uses, so
// the benchmark can separate "what FUSE and go-fuse cost" from "what vafs
// costs" (integration/bench, column "loopback").

import (
	"fmt"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// MountLoopback mounts a bare go-fuse loopback of directory src at mnt and
// returns the serving server; the caller unmounts it with Server.Unmount.
//
// Kernel FUSE passthrough is disabled on purpose: go-fuse's LoopbackFile
// offers its backing fd for passthrough, and with it the kernel would do
// reads and writes itself without ever calling the server, so the mount
// would measure the host file system rather than the FUSE round trip that
// every vafs request pays.
func MountLoopback(src, mnt string) (*gofuse.Server, error) {
	root, err := gofs.NewLoopbackRoot(src)
	if err != nil {
		return nil, fmt.Errorf("fuse: loopback root %s: %w", src, err)
	}
	// The same 1 s entry and attribute timeouts gofs.Mount uses by default.
	timeout := time.Second
	opts := &gofs.Options{
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
		MountOptions: gofuse.MountOptions{
			FsName:               src,
			Name:                 "vafs-loopback",
			DirectMount:          true,
			MaxWrite:             1 << 20,
			AllowOther:           false,
			DisabledCapabilities: gofuse.CAP_PASSTHROUGH,
		},
	}
	srv, err := gofs.Mount(mnt, root, opts)
	if err != nil {
		return nil, fmt.Errorf("fuse: mount loopback of %s at %s: %w", src, mnt, err)
	}
	return srv, nil
}
