// Package vafs is a virtualization-aware file system for Xen and KVM hosts.
// The packages below are laid out in DESIGN order: cmd/vafs -> fs/fuse ->
// fs -> {meta, blocks}; cachessd (and later cluster) implement blocks.Store.
// This root package holds only repository-wide tests (import rules).
package vafs
