package fs

// Room "snapshot" (doc.go, "Rooms"): snapshots, clones and rollback, each
// one commit with a function (commitWith), which flushes every cache
// first. It calls namespace, volume, commit, cache and store.

import (
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/vafs/vafs/meta"
)

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

// SnapshotName is the reserved root entry under which the binding shows
// snapshots as read-only files; no real file may take that name.
const SnapshotName = ".snapshots"

func snapshotOf(s meta.Snapshot) Snapshot {
	return Snapshot{Name: s.Name, ID: s.ID, Vol: s.Vol, Created: time.Unix(0, s.Created), Size: s.Head.Size, Blocks: s.Head.Blocks}
}

// SnapshotCreate freezes the current state of a regular file under name.
// O(1) whatever the size. The snapshot is durable when it returns.
// ErrExists if the name is taken, ErrInvalid for a bad name, ErrIsDir /
// ErrInvalid for something that is not a regular file.
func (f *FS) SnapshotCreate(ino uint64, name string) (Snapshot, error) {
	if err := checkName(name); err != nil {
		return Snapshot{}, err
	}
	if err := f.regular(ino); err != nil {
		return Snapshot{}, err
	}
	var s meta.Snapshot
	err := f.commitWith(func(*meta.Batch) error {
		var err error
		s, err = f.trees.CreateSnapshot(ino, name, now())
		return metaErr(err)
	})
	return snapshotOf(s), err
}

// SnapshotDelete deletes a snapshot and frees what nothing else
// references. ErrNotFound if there is no such snapshot. Durable on return.
func (f *FS) SnapshotDelete(ino uint64, name string) error {
	if err := f.regular(ino); err != nil {
		return err
	}
	return f.commitWith(func(*meta.Batch) error {
		return metaErr(f.trees.DeleteSnapshot(ino, name))
	})
}

// Snapshots lists a file's snapshots, oldest first.
func (f *FS) Snapshots(ino uint64) ([]Snapshot, error) {
	if _, err := f.inode(ino); err != nil {
		return nil, err
	}
	ms := f.trees.Snapshots(ino)
	out := make([]Snapshot, len(ms))
	for i, s := range ms {
		out[i] = snapshotOf(s)
	}
	return out, nil
}

// SnapshotRollback makes the file's content (and size) the snapshot's; the
// snapshot stays. A file open for writing is refused with ErrBusy unless
// force. Durable on return; the binding's invalidate hook is called so the
// kernel drops its cached pages.
func (f *FS) SnapshotRollback(ino uint64, name string, force bool) error {
	if err := f.regular(ino); err != nil {
		return err
	}
	if !force && f.openForWrite(ino) {
		return ErrBusy
	}
	// commitWith flushes the write-back cache before fn: no block written
	// before the rollback stays cached over the rolled-back tree.
	err := f.commitWith(func(*meta.Batch) error {
		return metaErr(f.trees.Rollback(ino, name, now()))
	})
	if err == nil && f.invalidate != nil {
		f.invalidate(ino)
	}
	return err
}

// SnapshotByID finds a snapshot by its id (ErrNotFound if it is gone).
func (f *FS) SnapshotByID(id uint64) (Snapshot, error) {
	s, err := f.trees.SnapshotByID(id)
	if err != nil {
		return Snapshot{}, metaErr(err)
	}
	return snapshotOf(s), nil
}

// ReadSnapshotAt reads from a snapshot, like ReadAt from a file.
func (f *FS) ReadSnapshotAt(id uint64, p []byte, off int64) (int, error) {
	s, err := f.trees.SnapshotByID(id)
	if err != nil {
		return 0, metaErr(err)
	}
	return f.readClipped(s.Head.Size, p, off, func(first uint64, dst []byte) error {
		f.gcMu.RLock()
		defer f.gcMu.RUnlock()
		ms, err := f.trees.LookupHead(s.Head, first, uint64(len(dst)/BlockSize))
		if err != nil {
			// The snapshot may have been deleted since it was found.
			if _, gone := f.trees.SnapshotByID(id); gone != nil {
				return metaErr(gone)
			}
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		return f.readMappings(s.Vol, first, ms, dst)
	})
}

// Clone makes dstName in dstParent an instant copy of src: a regular file
// shares every block (O(1)); a directory is cloned recursively (files,
// directories, symlinks, modes, owners, times, xattrs). dstName must not
// exist (ErrExists). The clone is durable on return; a crash leaves either
// no clone or the whole clone.
func (f *FS) Clone(src, dstParent uint64, dstName string) (Attr, error) {
	return f.CloneWithOrigin(src, dstParent, dstName, "")
}

// CloneWithOrigin is Clone recording where the clone came from (a path,
// shown by Describe; files inside a cloned directory get origin/relpath).
func (f *FS) CloneWithOrigin(src, dstParent uint64, dstName, origin string) (Attr, error) {
	return f.cloneInto(dstParent, dstName, func(b *meta.Batch, t int64) (uint64, uint32, error) {
		in, err := f.inode(src)
		if err != nil {
			return 0, 0, err
		}
		if isDir(in.Mode) {
			if err := f.checkNotAncestor(src, dstParent); err != nil {
				return 0, 0, fmt.Errorf("%w: cannot clone a directory into itself", err)
			}
		}
		ino, err := f.cloneNode(b, src, in, dstParent, origin, t)
		return ino, in.Mode, err
	})
}

// CloneSnapshot makes dstName in dstParent a writable file with a
// snapshot's content (O(1)). Durable on return.
func (f *FS) CloneSnapshot(id, dstParent uint64, dstName string) (Attr, error) {
	return f.CloneSnapshotWithOrigin(id, dstParent, dstName, "")
}

// CloneSnapshotWithOrigin is CloneSnapshot recording where it came from.
func (f *FS) CloneSnapshotWithOrigin(id, dstParent uint64, dstName, origin string) (Attr, error) {
	return f.cloneInto(dstParent, dstName, func(b *meta.Batch, t int64) (uint64, uint32, error) {
		s, err := f.trees.SnapshotByID(id)
		if err != nil {
			return 0, 0, metaErr(err)
		}
		vin, err := f.inode(s.Vol)
		if err != nil {
			return 0, 0, err
		}
		in := &meta.Inode{Mode: vin.Mode, Uid: vin.Uid, Gid: vin.Gid, Nlink: 1, Atime: t, Mtime: s.Created, Ctime: t, Origin: origin}
		ino := b.AllocIno()
		if err := metaErr(f.trees.CloneSnapshot(id, ino, t)); err != nil {
			return 0, 0, err
		}
		if err := f.trees.SetAttrs(ino, s.Head.Size, s.Created, t); err != nil {
			return 0, 0, metaErr(err)
		}
		b.PutInode(ino, in)
		return ino, in.Mode, f.copyXattrs(b, s.Vol, ino)
	})
}

// cloneInto runs build, which writes a new inode into b, and enters it as
// dstName in dstParent, all in one commit (see commitWith).
func (f *FS) cloneInto(dstParent uint64, dstName string, build func(b *meta.Batch, t int64) (ino uint64, mode uint32, err error)) (Attr, error) {
	if err := checkName(dstName); err != nil {
		return Attr{}, err
	}
	if err := reserved(dstParent, dstName); err != nil {
		return Attr{}, err
	}
	var ino uint64
	err := f.commitWith(func(b *meta.Batch) error {
		f.nsMu.Lock()
		defer f.nsMu.Unlock()
		p, err := f.newEntryParent(dstParent, dstName)
		if err != nil {
			return err
		}
		t := now()
		var mode uint32
		if ino, mode, err = build(b, t); err != nil {
			return err
		}
		return f.linkNew(b, dstParent, p, dstName, ino, mode, t)
	})
	if err != nil {
		return Attr{}, err
	}
	return f.GetAttr(ino)
}

// newEntryParent checks that dstName can be created in dir parent and
// returns the parent. Caller holds nsMu.
func (f *FS) newEntryParent(parent uint64, name string) (*meta.Inode, error) {
	p, err := f.dir(parent)
	if err != nil {
		return nil, err
	}
	if p.Nlink == 0 {
		return nil, ErrNotFound
	}
	if err := f.nameFree(parent, name); err != nil {
		return nil, err
	}
	return p, nil
}

// linkNew enters a new inode in parent p (in b).
func (f *FS) linkNew(b *meta.Batch, parent uint64, p *meta.Inode, name string, ino uint64, mode uint32, t int64) error {
	b.PutDirent(parent, name, meta.Dirent{Ino: ino, Type: mode & syscall.S_IFMT})
	if isDir(mode) {
		p.Nlink++
	}
	p.Mtime, p.Ctime = t, t
	b.PutInode(parent, p)
	return nil
}

func (f *FS) copyXattrs(b *meta.Batch, from, to uint64) error {
	names, err := f.db.ListXattr(from)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	for _, n := range names {
		v, err := f.db.GetXattr(from, n)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		b.PutXattr(to, n, v)
	}
	return nil
}

// cloneNode writes into b a copy of inode src (in) whose parent will be
// parent, and returns the new inode number: a regular file shares src's
// tree, a directory is cloned entry by entry. Nothing in b is visible to
// reads until the commit, so the listing of src is never affected by its
// own copy. Caller holds the state lock exclusively and nsMu.
func (f *FS) cloneNode(b *meta.Batch, src uint64, in *meta.Inode, parent uint64, origin string, t int64) (uint64, error) {
	ino := b.AllocIno()
	c := *in
	c.Ctime = t
	c.Origin = origin
	switch {
	case isReg(in.Mode):
		c.Nlink = 1
		if err := f.trees.Clone(src, ino, t); err != nil {
			return 0, metaErr(err)
		}
	case isDir(in.Mode):
		c.Nlink = 2
		c.Parent = parent
		c.Origin = ""
		ents, err := f.db.ListDir(src)
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		for _, e := range ents {
			cin, err := f.db.GetInode(e.Ino)
			if err != nil {
				return 0, fmt.Errorf("%w: entry %q in %d: %v", ErrCorrupt, e.Name, src, err)
			}
			corigin := ""
			if origin != "" {
				corigin = origin + "/" + e.Name
			}
			cino, err := f.cloneNode(b, e.Ino, cin, ino, corigin, t)
			if err != nil {
				return 0, err
			}
			b.PutDirent(ino, e.Name, meta.Dirent{Ino: cino, Type: cin.Mode & syscall.S_IFMT})
			if isDir(cin.Mode) {
				c.Nlink++
			}
		}
	default: // symlinks, FIFOs, devices: the inode says it all
		c.Nlink = 1
	}
	b.PutInode(ino, &c)
	if err := f.copyXattrs(b, src, ino); err != nil {
		return 0, err
	}
	return ino, nil
}

// Resolve finds the inode of a path relative to the root of the file
// system ("" or "." is the root). Symlinks are not followed; the caller
// resolves them. ErrNotFound, ErrNotDir as usual; ".." is ErrInvalid.
func (f *FS) Resolve(path string) (uint64, error) {
	ino := uint64(meta.RootIno)
	for _, c := range strings.Split(path, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return 0, fmt.Errorf("%w: %q: '..' is not allowed", ErrInvalid, path)
		}
		a, err := f.Lookup(ino, c)
		if err != nil {
			return 0, err
		}
		ino = a.Ino
	}
	return ino, nil
}

// SetInvalidate installs the binding's hook that drops the kernel's cached
// pages and attributes of an inode (called after rollback).
func (f *FS) SetInvalidate(fn func(ino uint64)) { f.invalidate = fn }
