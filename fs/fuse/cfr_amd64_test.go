//go:build linux && amd64

package fuse

const sysCopyFileRange = 326
