package fs

// Room "namespace" (doc.go, "Rooms"): directories, files, symlinks, hard
// links, xattrs and open counts. It owns nsMu and applies its changes to
// Pebble at once, in small unsynced batches, under the state read lock.
// It calls volume (a size change is a truncate), commit, cache and store.

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/vafs/vafs/meta"
)

// MaxName is the longest name in a directory.
const MaxName = 255

// Attr is what stat reports.
type Attr struct {
	Ino    uint64
	Mode   uint32 // type and permission bits
	Nlink  uint32
	Uid    uint32
	Gid    uint32
	Rdev   uint32
	Size   uint64
	Blocks uint64 // 512-byte units actually allocated
	Atime  time.Time
	Mtime  time.Time
	Ctime  time.Time
}

// IsDir reports whether the attributes are a directory's.
func (a Attr) IsDir() bool { return a.Mode&syscall.S_IFMT == syscall.S_IFDIR }

// IsRegular reports whether the attributes are a regular file's.
func (a Attr) IsRegular() bool { return a.Mode&syscall.S_IFMT == syscall.S_IFREG }

func (f *FS) attr(ino uint64, in *meta.Inode) (Attr, error) {
	a := Attr{Ino: ino, Mode: in.Mode, Nlink: in.Nlink, Uid: in.Uid, Gid: in.Gid, Rdev: in.Rdev, Size: in.Size,
		Atime: time.Unix(0, in.Atime), Mtime: time.Unix(0, in.Mtime), Ctime: time.Unix(0, in.Ctime)}
	if isReg(in.Mode) {
		h, err := f.trees.Head(ino)
		if err != nil {
			return Attr{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		a.Size = h.Size
		// Blocks in the write-back cache may be new or overwrite blocks the
		// tree counts: the sum, at most the size, is close and never low.
		blocks := h.Blocks
		if d := f.dirtyPages(ino); d > 0 {
			blocks = max(h.Blocks, min(h.Blocks+d, (h.Size+BlockSize-1)/BlockSize))
		}
		a.Blocks = blocks * (BlockSize / 512)
		if h.Mtime != 0 {
			a.Mtime = time.Unix(0, h.Mtime)
		}
		if h.Ctime > in.Ctime {
			a.Ctime = time.Unix(0, h.Ctime)
		}
	}
	return a, nil
}

// GetAttr returns the attributes of ino.
func (f *FS) GetAttr(ino uint64) (Attr, error) {
	in, err := f.inode(ino)
	if err != nil {
		return Attr{}, err
	}
	return f.attr(ino, in)
}

func checkName(name string) error {
	if len(name) > MaxName {
		return ErrNameTooLong
	}
	if name == "" || name == "." || name == ".." {
		return ErrInvalid
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return ErrInvalid
		}
	}
	return nil
}

func (f *FS) dirent(parent uint64, name string) (meta.Dirent, error) {
	if len(name) > MaxName {
		return meta.Dirent{}, ErrNameTooLong
	}
	e, err := f.db.GetDirent(parent, name)
	if errors.Is(err, meta.ErrNotFound) {
		return e, ErrNotFound
	}
	if err != nil {
		return e, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return e, nil
}

// nameFree fails with ErrExists when parent already has an entry name.
func (f *FS) nameFree(parent uint64, name string) error {
	_, err := f.dirent(parent, name)
	if err == nil {
		return ErrExists
	}
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

func (f *FS) dir(ino uint64) (*meta.Inode, error) {
	in, err := f.inode(ino)
	if err != nil {
		return nil, err
	}
	if !isDir(in.Mode) {
		return nil, ErrNotDir
	}
	return in, nil
}

// Lookup finds name in directory parent.
func (f *FS) Lookup(parent uint64, name string) (Attr, error) {
	if _, err := f.dir(parent); err != nil {
		return Attr{}, err
	}
	e, err := f.dirent(parent, name)
	if err != nil {
		return Attr{}, err
	}
	in, err := f.db.GetInode(e.Ino)
	if err != nil {
		return Attr{}, fmt.Errorf("%w: entry %q in %d points at inode %d: %v", ErrCorrupt, name, parent, e.Ino, err)
	}
	return f.attr(e.Ino, in)
}

// Create makes a new inode of the given mode (any type but directory and
// symlink) named name in parent.
func (f *FS) Create(parent uint64, name string, mode, rdev, uid, gid uint32) (Attr, error) {
	if mode&syscall.S_IFMT == 0 {
		mode |= syscall.S_IFREG
	}
	if isDir(mode) || mode&syscall.S_IFMT == syscall.S_IFLNK {
		return Attr{}, ErrInvalid
	}
	return f.mknode(parent, name, &meta.Inode{Mode: mode, Rdev: rdev, Uid: uid, Gid: gid, Nlink: 1})
}

// Mkdir makes a directory.
func (f *FS) Mkdir(parent uint64, name string, mode, uid, gid uint32) (Attr, error) {
	return f.mknode(parent, name, &meta.Inode{Mode: mode&^syscall.S_IFMT | syscall.S_IFDIR, Uid: uid, Gid: gid, Nlink: 2, Parent: parent})
}

// Symlink makes a symbolic link to target.
func (f *FS) Symlink(parent uint64, name, target string, uid, gid uint32) (Attr, error) {
	if len(target) > 4095 || target == "" {
		return Attr{}, ErrNameTooLong
	}
	return f.mknode(parent, name, &meta.Inode{Mode: syscall.S_IFLNK | 0o777, Uid: uid, Gid: gid, Nlink: 1,
		Target: target, Size: uint64(len(target))})
}

func (f *FS) mknode(parent uint64, name string, in *meta.Inode) (Attr, error) {
	if err := checkName(name); err != nil {
		return Attr{}, err
	}
	if err := reserved(parent, name); err != nil {
		return Attr{}, err
	}
	f.lockState()
	defer f.state.RUnlock()
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	p, err := f.dir(parent)
	if err != nil {
		return Attr{}, err
	}
	if p.Nlink == 0 {
		return Attr{}, ErrNotFound // a removed directory that is still open
	}
	if err := f.nameFree(parent, name); err != nil {
		return Attr{}, err
	}
	t := now()
	in.Atime, in.Mtime, in.Ctime = t, t, t
	b := f.db.NewBatch()
	ino := b.AllocIno()
	b.PutInode(ino, in)
	b.PutDirent(parent, name, meta.Dirent{Ino: ino, Type: in.Mode & syscall.S_IFMT})
	if isDir(in.Mode) {
		p.Nlink++
	}
	p.Mtime, p.Ctime = t, t
	b.PutInode(parent, p)
	if err := b.Commit(false); err != nil {
		return Attr{}, f.ioErr("create", err)
	}
	return f.attr(ino, in)
}

// Readlink returns a symlink's target.
func (f *FS) Readlink(ino uint64) (string, error) {
	in, err := f.inode(ino)
	if err != nil {
		return "", err
	}
	if in.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		return "", ErrInvalid
	}
	return in.Target, nil
}

// Link makes another name for ino.
func (f *FS) Link(ino, parent uint64, name string) (Attr, error) {
	if err := checkName(name); err != nil {
		return Attr{}, err
	}
	if err := reserved(parent, name); err != nil {
		return Attr{}, err
	}
	f.lockState()
	defer f.state.RUnlock()
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	in, err := f.inode(ino)
	if err != nil {
		return Attr{}, err
	}
	if isDir(in.Mode) {
		return Attr{}, ErrPerm
	}
	if in.Nlink == 0 {
		return Attr{}, ErrNotFound
	}
	p, err := f.dir(parent)
	if err != nil {
		return Attr{}, err
	}
	if err := f.nameFree(parent, name); err != nil {
		return Attr{}, err
	}
	t := now()
	in.Nlink++
	in.Ctime = t
	p.Mtime, p.Ctime = t, t
	b := f.db.NewBatch()
	b.PutInode(ino, in)
	b.PutInode(parent, p)
	b.PutDirent(parent, name, meta.Dirent{Ino: ino, Type: in.Mode & syscall.S_IFMT})
	if err := b.Commit(false); err != nil {
		return Attr{}, f.ioErr("link", err)
	}
	return f.attr(ino, in)
}

// dropLink removes one link of inode ino (already looked up as in) in b,
// deleting the inode and its volume when no link and no open handle is
// left. Caller holds nsMu and state.
func (f *FS) dropLink(b *meta.Batch, ino uint64, in *meta.Inode, t int64) error {
	if isDir(in.Mode) {
		in.Nlink = 0
	} else if in.Nlink > 0 {
		in.Nlink--
	}
	in.Ctime = t
	if in.Nlink > 0 {
		b.PutInode(ino, in)
		return nil
	}
	if f.isOpen(ino) {
		b.PutInode(ino, in)
		b.PutOrphan(ino)
		return nil
	}
	b.DelInode(ino)
	if isReg(in.Mode) {
		return f.deleteVolume(ino)
	}
	return nil
}

// Unlink removes a non-directory name.
func (f *FS) Unlink(parent uint64, name string) error {
	return f.remove(parent, name, false)
}

// Rmdir removes an empty directory.
func (f *FS) Rmdir(parent uint64, name string) error {
	return f.remove(parent, name, true)
}

func (f *FS) remove(parent uint64, name string, wantDir bool) error {
	f.lockState()
	defer f.state.RUnlock()
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	p, err := f.dir(parent)
	if err != nil {
		return err
	}
	e, err := f.dirent(parent, name)
	if err != nil {
		return err
	}
	in, err := f.db.GetInode(e.Ino)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if wantDir {
		if !isDir(in.Mode) {
			return ErrNotDir
		}
		empty, err := f.db.DirEmpty(e.Ino)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		if !empty {
			return ErrNotEmpty
		}
		p.Nlink--
	} else if isDir(in.Mode) {
		return ErrIsDir
	}
	t := now()
	b := f.db.NewBatch()
	b.DelDirent(parent, name)
	p.Mtime, p.Ctime = t, t
	b.PutInode(parent, p)
	if err := f.dropLink(b, e.Ino, in, t); err != nil {
		b.Close()
		return err
	}
	if err := b.Commit(false); err != nil {
		return f.ioErr("remove", err)
	}
	return nil
}

// Rename flags (renameat2).
const (
	RenameNoReplace = 1
	RenameExchange  = 2
)

// Rename moves oldName in oldParent to newName in newParent.
func (f *FS) Rename(oldParent uint64, oldName string, newParent uint64, newName string, flags uint32) error {
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return ErrInvalid
	}
	if err := checkName(newName); err != nil {
		return err
	}
	if err := reserved(newParent, newName); err != nil {
		return err
	}
	f.lockState()
	defer f.state.RUnlock()
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	op, err := f.dir(oldParent)
	if err != nil {
		return err
	}
	np := op
	if newParent != oldParent {
		if np, err = f.dir(newParent); err != nil {
			return err
		}
	}
	src, err := f.dirent(oldParent, oldName)
	if err != nil {
		return err
	}
	sin, err := f.inode(src.Ino)
	if err != nil {
		return err
	}
	dst, derr := f.dirent(newParent, newName)
	if derr != nil && !errors.Is(derr, ErrNotFound) {
		return derr
	}
	exists := derr == nil
	switch {
	case flags&RenameExchange != 0 && !exists:
		return ErrNotFound
	case flags&RenameNoReplace != 0 && exists:
		return ErrExists
	}
	if exists && dst.Ino == src.Ino {
		return nil // two links to one inode: nothing to do
	}
	// A directory must not move below itself.
	if newParent != oldParent {
		if isDir(sin.Mode) {
			if err := f.checkNotAncestor(src.Ino, newParent); err != nil {
				return err
			}
		}
	}
	t := now()
	b := f.db.NewBatch()
	if flags&RenameExchange != 0 {
		din, err := f.inode(dst.Ino)
		if err != nil {
			b.Close()
			return err
		}
		if newParent != oldParent && isDir(din.Mode) {
			if err := f.checkNotAncestor(dst.Ino, oldParent); err != nil {
				b.Close()
				return err
			}
		}
		b.PutDirent(oldParent, oldName, dst)
		b.PutDirent(newParent, newName, src)
		if newParent != oldParent {
			if isDir(sin.Mode) {
				op.Nlink--
				np.Nlink++
				sin.Parent = newParent
			}
			if isDir(din.Mode) {
				np.Nlink--
				op.Nlink++
				din.Parent = oldParent
			}
		}
		sin.Ctime, din.Ctime = t, t
		b.PutInode(src.Ino, sin)
		b.PutInode(dst.Ino, din)
	} else {
		if exists {
			din, err := f.inode(dst.Ino)
			if err != nil {
				b.Close()
				return err
			}
			if isDir(din.Mode) {
				if !isDir(sin.Mode) {
					b.Close()
					return ErrIsDir
				}
				empty, err := f.db.DirEmpty(dst.Ino)
				if err != nil {
					b.Close()
					return fmt.Errorf("%w: %v", ErrCorrupt, err)
				}
				if !empty {
					b.Close()
					return ErrNotEmpty
				}
				np.Nlink--
			} else if isDir(sin.Mode) {
				b.Close()
				return ErrNotDir
			}
			if err := f.dropLink(b, dst.Ino, din, t); err != nil {
				b.Close()
				return err
			}
		}
		b.DelDirent(oldParent, oldName)
		b.PutDirent(newParent, newName, src)
		if isDir(sin.Mode) && newParent != oldParent {
			op.Nlink--
			np.Nlink++
			sin.Parent = newParent
		}
		sin.Ctime = t
		b.PutInode(src.Ino, sin)
	}
	op.Mtime, op.Ctime = t, t
	b.PutInode(oldParent, op)
	if newParent != oldParent {
		np.Mtime, np.Ctime = t, t
		b.PutInode(newParent, np)
	}
	if err := b.Commit(false); err != nil {
		return f.ioErr("rename", err)
	}
	return nil
}

// checkNotAncestor fails with ErrInvalid when dir is dest or above it.
func (f *FS) checkNotAncestor(dir, dest uint64) error {
	for cur, depth := dest, 0; cur != 0 && depth < 1<<16; depth++ {
		if cur == dir {
			return ErrInvalid
		}
		if cur == meta.RootIno {
			return nil
		}
		in, err := f.inode(cur)
		if err != nil {
			return err
		}
		cur = in.Parent
	}
	return nil
}

// SetAttrIn says which attributes to change (nil: leave alone).
type SetAttrIn struct {
	Mode         *uint32
	Uid, Gid     *uint32
	Size         *uint64
	Atime, Mtime *time.Time
}

// SetAttr changes attributes; a size change truncates or extends the volume.
func (f *FS) SetAttr(ino uint64, in SetAttrIn) (Attr, error) {
	if in.Size != nil {
		cur, err := f.inode(ino)
		if err != nil {
			return Attr{}, err
		}
		if isDir(cur.Mode) {
			return Attr{}, ErrIsDir
		}
		if !isReg(cur.Mode) {
			return Attr{}, ErrInvalid
		}
		if err := f.Truncate(ino, *in.Size); err != nil {
			return Attr{}, err
		}
	}
	f.lockState()
	defer f.state.RUnlock()
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	cur, err := f.inode(ino)
	if err != nil {
		return Attr{}, err
	}
	t := now()
	changed := false
	if in.Mode != nil {
		cur.Mode = cur.Mode&syscall.S_IFMT | *in.Mode&^syscall.S_IFMT
		changed = true
	}
	if in.Uid != nil {
		cur.Uid, changed = *in.Uid, true
	}
	if in.Gid != nil {
		cur.Gid, changed = *in.Gid, true
	}
	if in.Atime != nil {
		cur.Atime, changed = in.Atime.UnixNano(), true
	}
	if in.Mtime != nil {
		if isReg(cur.Mode) {
			// Only the times: a write may extend the volume meanwhile.
			if err := f.trees.SetTimes(ino, in.Mtime.UnixNano(), t); err != nil {
				return Attr{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
			}
		}
		cur.Mtime, changed = in.Mtime.UnixNano(), true
	}
	if changed {
		cur.Ctime = t
		b := f.db.NewBatch()
		b.PutInode(ino, cur)
		if err := b.Commit(false); err != nil {
			return Attr{}, f.ioErr("setattr", err)
		}
	}
	return f.attr(ino, cur)
}

// ReadDir lists a directory (without "." and "..").
func (f *FS) ReadDir(ino uint64) ([]meta.DirEntry, error) {
	if _, err := f.dir(ino); err != nil {
		return nil, err
	}
	ents, err := f.db.ListDir(ino)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return ents, nil
}

// Xattr flags (setxattr).
const (
	XattrCreate  = 1
	XattrReplace = 2
	maxXattr     = 64 << 10
)

// GetXattr reads an extended attribute.
func (f *FS) GetXattr(ino uint64, name string) ([]byte, error) {
	if _, err := f.inode(ino); err != nil {
		return nil, err
	}
	v, err := f.db.GetXattr(ino, name)
	if errors.Is(err, meta.ErrNotFound) {
		return nil, ErrNoAttr
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return v, nil
}

// SetXattr writes an extended attribute.
func (f *FS) SetXattr(ino uint64, name string, value []byte, flags uint32) error {
	if len(name) > 255 || name == "" {
		return ErrInvalid
	}
	if strings.HasPrefix(name, "system.posix_acl_") {
		// ACLs are not supported: storing them as plain xattrs would make
		// cp -a, tar and rsync believe the mode was set when it was not.
		return ErrNotSupported
	}
	if len(value) > maxXattr {
		return ErrXattrRange
	}
	f.lockState()
	defer f.state.RUnlock()
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	in, err := f.inode(ino)
	if err != nil {
		return err
	}
	_, gerr := f.db.GetXattr(ino, name)
	exists := gerr == nil
	if flags&XattrCreate != 0 && exists {
		return ErrExists
	}
	if flags&XattrReplace != 0 && !exists {
		return ErrNoAttr
	}
	in.Ctime = now()
	b := f.db.NewBatch()
	b.PutXattr(ino, name, value)
	b.PutInode(ino, in)
	if err := b.Commit(false); err != nil {
		return f.ioErr("setxattr", err)
	}
	return nil
}

// ListXattr lists extended attribute names.
func (f *FS) ListXattr(ino uint64) ([]string, error) {
	if _, err := f.inode(ino); err != nil {
		return nil, err
	}
	names, err := f.db.ListXattr(ino)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return names, nil
}

// RemoveXattr removes an extended attribute.
func (f *FS) RemoveXattr(ino uint64, name string) error {
	f.lockState()
	defer f.state.RUnlock()
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	in, err := f.inode(ino)
	if err != nil {
		return err
	}
	if _, err := f.db.GetXattr(ino, name); err != nil {
		return ErrNoAttr
	}
	in.Ctime = now()
	b := f.db.NewBatch()
	b.DelXattr(ino, name)
	b.PutInode(ino, in)
	if err := b.Commit(false); err != nil {
		return f.ioErr("removexattr", err)
	}
	return nil
}

// Open records an open handle on ino (a file unlinked while open lives
// until its last Release); write says it may write (rollback refuses a
// file open for writing).
func (f *FS) Open(ino uint64, write bool) (Attr, error) {
	// Under nsMu, so that an unlink either sees the handle or deletes the
	// inode before the open can find it.
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	a, err := f.GetAttr(ino)
	if err != nil {
		return Attr{}, err
	}
	v := f.vol(ino)
	f.vmu.Lock()
	v.opens++
	if write {
		v.writers++
	}
	f.vmu.Unlock()
	return a, nil
}

func (f *FS) openForWrite(ino uint64) bool {
	f.vmu.Lock()
	defer f.vmu.Unlock()
	v := f.vols[ino]
	return v != nil && v.writers > 0
}

func (f *FS) isOpen(ino uint64) bool {
	f.vmu.Lock()
	defer f.vmu.Unlock()
	v := f.vols[ino]
	return v != nil && v.opens > 0
}

// Release drops an open handle (write as given to Open); the last one of
// an unlinked file deletes it.
func (f *FS) Release(ino uint64, write bool) error {
	f.vmu.Lock()
	v := f.vols[ino]
	last := false
	if v != nil && v.opens > 0 {
		v.opens--
		if write && v.writers > 0 {
			v.writers--
		}
		last = v.opens == 0
	}
	f.vmu.Unlock()
	if !last {
		return nil
	}
	f.lockState()
	defer f.state.RUnlock()
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	if f.isOpen(ino) {
		return nil
	}
	in, err := f.db.GetInode(ino)
	if err != nil || in.Nlink > 0 {
		return nil
	}
	b := f.db.NewBatch()
	b.DelInode(ino)
	b.DelOrphan(ino)
	if isReg(in.Mode) {
		if err := f.deleteVolume(ino); err != nil {
			b.Close()
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
	if err := b.Commit(false); err != nil {
		return f.ioErr("release", err)
	}
	return nil
}

// reserved refuses names the binding uses itself.
func reserved(parent uint64, name string) error {
	if parent == meta.RootIno && name == SnapshotName {
		return fmt.Errorf("%w: %s is reserved for snapshots", ErrPerm, SnapshotName)
	}
	return nil
}
