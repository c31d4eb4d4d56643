//go:build linux && amd64

package integration

const sysCopyFileRange = 326
