package fuse

import gofuse "github.com/hanwen/go-fuse/v2/fuse"

// Every go-fuse interface the binding implements, checked at compile time.
var _ gofuse.RawFileSystem = (*rawFS)(nil)
