package fs

import "time"

// Snapshot is a named, read-only, frozen state of a volume.
type Snapshot struct {
	Name    string
	ID      uint64 // unique in the data dir, never reused; .snapshots node ids derive from it
	Vol     uint64 // the volume (inode) it belongs to
	Created time.Time
	Size    uint64 // apparent size at the time of the snapshot
	Blocks  uint64 // mapped blocks
}

// Description is what `vafs describe` shows of one file.
type Description struct {
	Ino          uint64
	Size         uint64 // apparent size
	Allocated    uint64 // bytes mapped by the file
	Unique       uint64 // bytes of the file that no snapshot and no other file references
	Shared       uint64 // Allocated - Unique: also referenced by a snapshot or another file
	SnapshotOnly uint64 // bytes held only by this file's snapshots (deleting them all frees this)
	Snapshots    []Snapshot
	Origin       string // what it was cloned from ("vms/a.raw", "vms/a.raw@s1"), "" if created
}

// Usage is what `vafs df` shows of the whole data dir.
type Usage struct {
	Files, Snapshots int
	Logical          uint64 // bytes mapped by files
	SnapshotLogical  uint64 // bytes mapped by snapshots
	Physical         uint64 // bytes of distinct live blocks
	Saved            uint64 // Logical + SnapshotLogical - Physical: what sharing saves
	Stored           uint64 // bytes of segment files (includes dead blocks awaiting compaction)
	Metadata         uint64 // Pebble's disk usage
	Segments         int
}

// CompactStats reports one compaction pass.
type CompactStats struct {
	Segments int    // segments compacted (their files removed)
	Moved    uint64 // live blocks copied
	Freed    uint64 // bytes given back
}

// ErrBusy: the file is open for writing (rollback without force).
// (Declared here with the API it belongs to; fs/fuse maps it to EBUSY.)

// SnapshotCreate freezes the current state of a regular file under name.
// O(1) whatever the size. The snapshot is durable when it returns.
// ErrExists if the name is taken, ErrInvalid for a bad name, ErrIsDir /
// ErrInvalid for something that is not a regular file.
func (f *FS) SnapshotCreate(ino uint64, name string) (Snapshot, error) {
	return Snapshot{}, ErrNotSupported
}

// SnapshotDelete deletes a snapshot and frees what nothing else
// references. ErrNotFound if there is no such snapshot. Durable on return.
func (f *FS) SnapshotDelete(ino uint64, name string) error { return ErrNotSupported }

// Snapshots lists a file's snapshots, oldest first.
func (f *FS) Snapshots(ino uint64) ([]Snapshot, error) { return nil, ErrNotSupported }

// SnapshotRollback makes the file's content (and size) the snapshot's; the
// snapshot stays. A file open for writing is refused with ErrBusy unless
// force. Durable on return; the binding's invalidate hook is called so the
// kernel drops its cached pages.
func (f *FS) SnapshotRollback(ino uint64, name string, force bool) error { return ErrNotSupported }

// SnapshotByID finds a snapshot by its id (ErrNotFound if it is gone).
func (f *FS) SnapshotByID(id uint64) (Snapshot, error) { return Snapshot{}, ErrNotSupported }

// ReadSnapshotAt reads from a snapshot, like ReadAt from a file.
func (f *FS) ReadSnapshotAt(id uint64, p []byte, off int64) (int, error) { return 0, ErrNotSupported }

// Clone makes dstName in dstParent an instant copy of src: a regular file
// shares every block (O(1)); a directory is cloned recursively (files,
// directories, symlinks, modes, owners, times, xattrs). dstName must not
// exist (ErrExists). The clone is durable on return; a crash leaves either
// no clone or the whole clone.
func (f *FS) Clone(src, dstParent uint64, dstName string) (Attr, error) {
	return Attr{}, ErrNotSupported
}

// CloneSnapshot makes dstName in dstParent a writable file with a
// snapshot's content (O(1)). Durable on return.
func (f *FS) CloneSnapshot(id, dstParent uint64, dstName string) (Attr, error) {
	return Attr{}, ErrNotSupported
}

// Resolve finds the inode of a path relative to the root of the file
// system ("" or "." is the root). Symlinks are not followed; the caller
// resolves them. ErrNotFound, ErrNotDir as usual.
func (f *FS) Resolve(path string) (uint64, error) { return 0, ErrNotSupported }

// SetInvalidate installs the binding's hook that drops the kernel's cached
// pages and attributes of an inode (called after rollback).
func (f *FS) SetInvalidate(fn func(ino uint64)) { f.invalidate = fn }
