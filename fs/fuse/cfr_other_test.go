//go:build !(linux && amd64)

package fuse

var sysCopyFileRange = -1 // unknown here: the copy_file_range test skips
