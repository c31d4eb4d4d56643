package fuse

// The .snapshots tree: MOUNT/.snapshots/<path of a file>/<snapshot name>
// (docs/cli-snapshots.md). It exists only in the binding; fs knows nothing
// of it beyond Snapshots, SnapshotByID and ReadSnapshotAt.
//
// Node ids. vafs inode numbers are small counters, so the two top bits
// are free and the virtual tree lives there, where it can never collide
// with a real inode:
//
//	1<<62 | ino   the mirror of real inode ino: a directory that lists the
//	              subdirectories and regular files of a real directory, or
//	              the snapshots of a real regular file. .snapshots itself
//	              is the mirror of the root (1<<62 | 1).
//	1<<63 | id    snapshot id (ids are never reused, so a node id always
//	              means the same content and its page cache never goes
//	              stale: opens get FOPEN_KEEP_CACHE).
//
// Permissions. default_permissions makes the kernel check mode bits, so a
// mirror must not show more than the real tree: a directory's mirror has
// its read and search bits; a file's mirror has the file's read bits, each
// with the search bit beside it (0640 -> dr-xr-x---), so whoever may not
// read the file may not reach its snapshots either. The snapshot files
// themselves are 0444, owned by the volume's owner and group.
//
// Everything under .snapshots is read-only: every change answers EROFS.
// .snapshots is left out of the root's listing (cp -a, find, rm -rf never
// walk it) and no real entry of that name can be made in the root (EPERM).

import (
	"errors"
	"syscall"
	"time"

	vfs "github.com/vafs/vafs/fs"
	"github.com/vafs/vafs/meta"
)

const (
	mirrorBit = uint64(1) << 62
	snapBit   = uint64(1) << 63
	// snapRoot is .snapshots, the mirror of the root directory.
	snapRoot = mirrorBit | meta.RootIno
	// SnapshotsDir is the name of the virtual tree in the root (fs reserves
	// it too).
	SnapshotsDir = vfs.SnapshotName
)

func isVirtual(node uint64) bool   { return node&(mirrorBit|snapBit) != 0 }
func isSnapshot(node uint64) bool  { return node&snapBit != 0 }
func realIno(mirror uint64) uint64 { return mirror &^ mirrorBit }
func snapID(node uint64) uint64    { return node &^ snapBit }

// reservedName tells whether name in parent is the virtual tree's place,
// where no real entry may be made.
func reservedName(parent uint64, name string) bool {
	return parent == meta.RootIno && name == SnapshotsDir
}

// mirrorAttr presents real inode a (a directory or a regular file) as its
// read-only mirror directory.
func mirrorAttr(a vfs.Attr) (vfs.Attr, error) {
	var perm uint32
	switch {
	case a.IsDir():
		perm = a.Mode & 0o555
	case a.IsRegular():
		r := a.Mode & 0o444
		perm = r | r>>2
	default:
		return vfs.Attr{}, vfs.ErrNotFound // symlinks and others are not mirrored
	}
	// Nlink 1: "unknown", so find(1) does not infer the number of
	// subdirectories from it (a file's mirror is a subdirectory too).
	return vfs.Attr{Ino: mirrorBit | a.Ino, Mode: syscall.S_IFDIR | perm, Nlink: 1, Uid: a.Uid, Gid: a.Gid,
		Atime: a.Atime, Mtime: a.Mtime, Ctime: a.Ctime}, nil
}

// snapAttr presents snapshot s of volume vol as a read-only file.
func snapAttr(s vfs.Snapshot, vol vfs.Attr) vfs.Attr {
	return vfs.Attr{Ino: snapBit | s.ID, Mode: syscall.S_IFREG | 0o444, Nlink: 1, Uid: vol.Uid, Gid: vol.Gid,
		Size: s.Size, Blocks: s.Blocks * (vfs.BlockSize / 512), Atime: s.Created, Mtime: s.Created, Ctime: s.Created}
}

// virtAttr is GetAttr for a node of the virtual tree.
func (r *rawFS) virtAttr(node uint64) (vfs.Attr, error) {
	if isSnapshot(node) {
		s, err := r.fs.SnapshotByID(snapID(node))
		if err != nil {
			return vfs.Attr{}, err
		}
		vol, err := r.fs.GetAttr(s.Vol)
		if err != nil {
			return vfs.Attr{}, err
		}
		return snapAttr(s, vol), nil
	}
	a, err := r.fs.GetAttr(realIno(node))
	if err != nil {
		return vfs.Attr{}, err
	}
	return mirrorAttr(a)
}

// virtLookup finds name in mirror directory parent.
func (r *rawFS) virtLookup(parent uint64, name string) (vfs.Attr, error) {
	if isSnapshot(parent) {
		return vfs.Attr{}, vfs.ErrNotDir
	}
	dir, err := r.fs.GetAttr(realIno(parent))
	if err != nil {
		return vfs.Attr{}, err
	}
	switch {
	case dir.IsDir():
		if reservedName(dir.Ino, name) {
			return vfs.Attr{}, vfs.ErrNotFound // .snapshots does not mirror itself
		}
		a, err := r.fs.Lookup(dir.Ino, name)
		if err != nil {
			return vfs.Attr{}, err
		}
		return mirrorAttr(a)
	case dir.IsRegular():
		snaps, err := r.fs.Snapshots(dir.Ino)
		if err != nil {
			return vfs.Attr{}, err
		}
		for _, s := range snaps {
			if s.Name == name {
				return snapAttr(s, dir), nil
			}
		}
		return vfs.Attr{}, vfs.ErrNotFound
	}
	return vfs.Attr{}, vfs.ErrNotFound
}

// virtReadDir lists mirror directory node: a directory's subdirectories
// and regular files (each a directory here), or a file's snapshots.
func (r *rawFS) virtReadDir(node uint64) ([]meta.DirEntry, error) {
	if isSnapshot(node) {
		return nil, vfs.ErrNotDir
	}
	dir, err := r.fs.GetAttr(realIno(node))
	if err != nil {
		return nil, err
	}
	switch {
	case dir.IsDir():
		ents, err := r.fs.ReadDir(dir.Ino)
		if err != nil {
			return nil, err
		}
		out := ents[:0]
		for _, e := range ents {
			if e.Type != syscall.S_IFDIR && e.Type != syscall.S_IFREG || reservedName(dir.Ino, e.Name) {
				continue
			}
			e.Ino, e.Type = mirrorBit|e.Ino, syscall.S_IFDIR
			out = append(out, e)
		}
		return out, nil
	case dir.IsRegular():
		snaps, err := r.fs.Snapshots(dir.Ino)
		if err != nil {
			return nil, err
		}
		out := make([]meta.DirEntry, len(snaps))
		for i, s := range snaps {
			out[i] = meta.DirEntry{Name: s.Name, Dirent: meta.Dirent{Ino: snapBit | s.ID, Type: syscall.S_IFREG}}
		}
		return out, nil
	}
	return nil, vfs.ErrNotFound
}

// hideSnapshotsDir drops a real entry named .snapshots from the root's
// listing (one made before the name was reserved): the name belongs to
// the virtual tree, which is not listed either.
func hideSnapshotsDir(ents []meta.DirEntry) []meta.DirEntry {
	for i, e := range ents {
		if e.Name == SnapshotsDir {
			return append(ents[:i:i], ents[i+1:]...)
		}
	}
	return ents
}

// snapLseek answers SEEK_DATA/SEEK_HOLE on a snapshot from its own tree,
// so copies of it stay sparse. Never ENOSYS: that would make the kernel
// stop sending lseek for the whole mount.
func (r *rawFS) snapLseek(node uint64, off uint64, whence uint32) (uint64, error) {
	return r.fs.SnapshotLseek(snapID(node), off, int(whence))
}

// invalidateTimeout bounds how long the rollback hook waits for the
// kernel. The notification is a synchronous write to /dev/fuse: the kernel
// locks each cached page of the file to drop it (and writes dirty ones
// back through this server), so it waits for any READ or WRITE of that
// file in flight. Those are served by other goroutines and finish — unless
// the caller holds an fs lock they need. Waiting a bounded time keeps a
// wrong caller from hanging the control socket; the notification then
// still completes on its own once the lock is released.
const invalidateTimeout = 30 * time.Second

// invalidator returns the hook fs calls after a rollback. notify is
// Server.InodeNotify. It must not be called from inside a FUSE request
// (the kernel would wait for that request's own pages).
func invalidator(notify func(ino uint64) syscall.Errno, lg interface{ Printf(string, ...any) }) func(uint64) {
	return func(ino uint64) {
		done := make(chan syscall.Errno, 1)
		go func() { done <- notify(ino) }()
		select {
		case errno := <-done:
			// ENOENT: the kernel has no inode for it (never looked up, or
			// forgotten), so there is nothing cached to drop.
			if errno != 0 && !errors.Is(errno, syscall.ENOENT) {
				lg.Printf("invalidate inode %d: %v", ino, errno)
			}
		case <-time.After(invalidateTimeout):
			lg.Printf("invalidate inode %d: kernel still busy after %v; it completes in the background", ino, invalidateTimeout)
		}
	}
}
