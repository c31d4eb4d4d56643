// Package fs is the vafs file system without FUSE: the namespace
// (directories, files, symlinks, hard links, xattrs) and the volume I/O API
// (every regular file is a volume) over meta and blocks. Tests drive it in
// process; fs/fuse binds it to the kernel.
//
// Errors are Go errors matched with errors.Is against the sentinels in
// errors.go; only fs/fuse turns them into errno. fs must never import
// go-fuse, cmd, cluster or cachessd (it is handed a blocks.Store).
//
// # Rooms
//
// The package is split into rooms, each a set of files with one concern,
// its own state and locks, and a doc comment at the top of each file. A
// room calls only the rooms below it; TestRoomsCallDown (rooms_test.go)
// checks every call it can resolve, as imports_test.go does for packages.
//
//	lifecycle  fs.go check.go errors.go metrics.go   FS, Open, recovery, Close, fsck; calls every room
//	namespace  namespace.go                          names, inodes, xattrs (nsMu)
//	snapshot   snapshot.go                           snapshots, clones, rollback (one commit each)
//	space      compact.go sweep.go usage.go          compaction, sweep, describe/df
//	volume     volume.go                             volume I/O, fsync (volume.wmu)
//	commit     commit.go mempressure.go              commits: capture, sync, land (commitMu, group commit, background goroutines)
//	cache      wcache.go journal.go                  the write-back cache and the fsync journal
//	store      store.go class.go                     the volume table, log appends and mapping, inode reads, error mapping
//
// Above the lowest three, the order is namespace, snapshot and space over
// volume (space and snapshot also call namespace). A write from FUSE to the
// segment is one path downward: volume (WriteAt) -> cache (storeBlocks,
// later a flush) -> store (putBlocks) -> blocks.Log; an fsync: volume
// (Fsync) -> cache (a journal record) or commit (commitVolume: flush, then
// capture and land).
//
// Locking, outermost first: FS.cpass.mu (one compaction pass at a time),
// FS.commitMu (one commit at a time),
// volume.wmu (shared by whole-block writes and flush steps, exclusive for
// every other change of a volume, so read-modify-write of partial blocks
// is atomic, and by an fsync writing a journal record), FS.jmu (shared by
// a journal record on its way to Pebble, exclusive by a commit with a
// function, from before its capture to after it), FS.state (read-locked by
// every mutation, write-locked by a commit while it captures the tree
// state, by clone/snapshot/rollback for their whole change, and by
// compaction only while it redirects one victim's leaves; describe and df
// walk a committed view without it), FS.nsMu
// (namespace changes), volCache.flushMu, then volCache.mu and FS.jvmu
// (never both), FS.gcMu (read-locked from mapping lookup to block read,
// write-locked while dead segments are removed).
package fs
