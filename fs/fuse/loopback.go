package fuse

// The loopback mount is not part of vafs: it is the yardstick. It serves a
// plain directory through go-fuse's stock loopback with the FUSE transport
// settings vafs uses (see Mount), so the benchmark can separate "what FUSE
// and go-fuse cost" from "what vafs costs" (integration/bench, column
// "loopback"). Keep the settings below in step with Mount.

import (
	"context"
	"fmt"
	"syscall"
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
//
// What vafs asks of the kernel for concurrency, the loopback asks too:
// async direct I/O, 64 background requests and parallel direct writes.
// Without them a queue depth of 16 is served one request at a time, and
// vafs/loopback would compare two different FUSE configurations rather
// than vafs with FUSE itself.
func MountLoopback(src, mnt string) (*gofuse.Server, error) {
	stock, err := gofs.NewLoopbackRoot(src)
	if err != nil {
		return nil, fmt.Errorf("fuse: loopback root %s: %w", src, err)
	}
	ln, ok := stock.(*gofs.LoopbackNode)
	if !ok {
		return nil, fmt.Errorf("fuse: go-fuse loopback root is a %T, not a *LoopbackNode", stock)
	}
	root := &loopbackNode{ln}
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
			MaxReadAhead:         1 << 20,
			MaxBackground:        64,
			AllowOther:           false,
			ExtraCapabilities:    gofuse.CAP_ASYNC_DIO,
			DisabledCapabilities: gofuse.CAP_PASSTHROUGH,
		},
	}
	srv, err := gofs.Mount(mnt, root, opts)
	if err != nil {
		return nil, fmt.Errorf("fuse: mount loopback of %s at %s: %w", src, mnt, err)
	}
	return srv, nil
}

// loopbackNode is go-fuse's LoopbackNode whose files accept parallel
// O_DIRECT writes, as vafs files do (FOPEN_PARALLEL_DIRECT_WRITES; without
// it the kernel holds the inode lock across each direct write). WrapChild
// makes every node below the root one too.
type loopbackNode struct {
	*gofs.LoopbackNode
}

var (
	_ = (gofs.NodeOpener)((*loopbackNode)(nil))
	_ = (gofs.NodeCreater)((*loopbackNode)(nil))
	_ = (gofs.NodeWrapChilder)((*loopbackNode)(nil))
)

func (n *loopbackNode) WrapChild(_ context.Context, ops gofs.InodeEmbedder) gofs.InodeEmbedder {
	if ln, ok := ops.(*gofs.LoopbackNode); ok {
		return &loopbackNode{ln}
	}
	return ops
}

func (n *loopbackNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	return fh, fuseFlags | gofuse.FOPEN_PARALLEL_DIRECT_WRITES, errno
}

func (n *loopbackNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *gofuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	inode, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	return inode, fh, fuseFlags | gofuse.FOPEN_PARALLEL_DIRECT_WRITES, errno
}
