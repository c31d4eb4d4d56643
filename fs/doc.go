// Package fs is the vafs file system without FUSE: the namespace
// (directories, files, symlinks, hard links, xattrs) and the volume I/O API
// (every regular file is a volume) over meta and blocks. Tests drive it in
// process; fs/fuse binds it to the kernel.
//
// Errors are Go errors matched with errors.Is against the sentinels in
// errors.go; only fs/fuse turns them into errno. fs must never import
// go-fuse, cmd, cluster or cachessd (it is handed a blocks.Store).
//
// Locking, outermost first: FS.commitMu (one commit at a time),
// volume.wmu (shared by whole-block writes, exclusive for every other
// change of a volume, so read-modify-write of partial blocks is atomic),
// FS.state (read-locked by every mutation, write-locked by a commit while
// it captures the tree state, by clone/snapshot/rollback for their whole
// change, and by compaction, describe and df while they walk the trees), FS.nsMu (namespace changes), FS.gcMu (read-locked from
// mapping lookup to block read, write-locked while dead segments are
// removed).
package fs
