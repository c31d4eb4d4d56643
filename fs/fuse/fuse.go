package fuse

import (
	"errors"
	"fmt"
	"log"
	"strings"
	"sync"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	vfs "github.com/vafs/vafs/fs"
	"github.com/vafs/vafs/meta"
)

// Options tunes the mount.
type Options struct {
	FsName         string // shown as the source in /proc/mounts
	Debug          bool
	WritebackCache bool // kernel write-back caching (CAP_WRITEBACK_CACHE)
	AllowOther     bool
	Logger         *log.Logger
	// NoPollHack skips go-fuse's WaitMount. NewServer has already mounted
	// and answered the kernel's INIT; all WaitMount adds is the "poll
	// hack", a poll(2) by this process on a file of its own mount, which
	// a process that also opens files on its mount (the in-process tests)
	// needs so Go's netpoller never polls its own mount later. But a
	// SIGKILL landing while that poll waits leaves the dying process stuck
	// for good in uninterruptible sleep: the request has gone to userspace
	// and the threads that could answer it are gone (it hung the
	// integration suite's kill-during-start test). `vafs mount` never
	// opens files on its own mount, so it sets this.
	NoPollHack bool
}

const ttl = time.Second

// ttlFor is how long the kernel may cache an entry or attributes: ttl for
// real files, 0 under .snapshots, whose entries vanish when a snapshot or
// its file is deleted through the control socket (not through the kernel),
// so a cached entry would outlive its snapshot.
func ttlFor(node uint64) time.Duration {
	if isVirtual(node) {
		return 0
	}
	return ttl
}

type rawFS struct {
	gofuse.RawFileSystem
	fs *vfs.FS
	lg *log.Logger

	mu     sync.Mutex
	nextFh uint64
	dirs   map[uint64][]meta.DirEntry
}

// Mount mounts f at mnt and starts serving; the caller waits on the
// returned server (Wait) and unmounts it (Unmount).
func Mount(f *vfs.FS, mnt string, o Options) (*gofuse.Server, error) {
	if o.Logger == nil {
		o.Logger = log.Default()
	}
	r := &rawFS{RawFileSystem: gofuse.NewDefaultRawFileSystem(), fs: f, lg: o.Logger, dirs: map[uint64][]meta.DirEntry{}}
	mo := &gofuse.MountOptions{
		FsName:             o.FsName,
		Name:               "vafs",
		DirectMount:        true,
		AllowOther:         o.AllowOther,
		Options:            []string{"default_permissions"},
		MaxWrite:           1 << 20,
		MaxReadAhead:       1 << 20,
		MaxBackground:      64,
		DisableReadDirPlus: true,
		// vafs answers reads from memory (ReadResultData), never with a
		// file descriptor go-fuse could splice from. With splicing on,
		// go-fuse 2.12 still takes a pipe for every read reply, writes the
		// header into it, finds nothing to splice, drains the pipe and then
		// writes the reply the ordinary way: four wasted system calls per
		// read (strace -c of 4k random reads: 11.3 system calls per read
		// with splicing, 4.7 without).
		DisableSplice: true,
		Debug:         o.Debug,
		Logger:        o.Logger,
		PanicHandler: func(v any) gofuse.Status {
			o.Logger.Printf("panic in FUSE handler: %v (EIO)", v)
			return gofuse.EIO
		},
	}
	// Async direct I/O lets the kernel keep several O_DIRECT requests of
	// one file in flight (qemu aio=native, fio libaio): without it a queue
	// depth of 16 is served one request at a time.
	mo.ExtraCapabilities |= gofuse.CAP_ASYNC_DIO
	// With HANDLE_KILLPRIV_V2 the server clears suid/sgid (and file
	// capabilities) on write, truncate and chown (the WRITE_KILL_SUIDGID,
	// FATTR_KILL_SUIDGID and OPEN_KILL_SUIDGID flags), and the kernel marks
	// the superblock SB_NOSEC: it then no longer asks for
	// security.capability (a GETXATTR round trip) before every write, only
	// once after each attribute refresh.
	mo.ExtraCapabilities |= gofuse.CAP_HANDLE_KILLPRIV_V2
	if o.WritebackCache {
		mo.ExtraCapabilities |= gofuse.CAP_WRITEBACK_CACHE
	}
	srv, err := gofuse.NewServer(r, mnt, mo)
	if err != nil {
		return nil, fmt.Errorf("fuse: mount %s: %w", mnt, err)
	}
	// Rollback (from the control socket, never from a FUSE request) drops
	// the kernel's cached pages and attributes of the file.
	f.SetInvalidate(invalidator(func(ino uint64) syscall.Errno {
		return syscall.Errno(srv.InodeNotify(ino, 0, -1))
	}, o.Logger))
	go srv.Serve()
	if o.NoPollHack {
		return srv, nil
	}
	if err := srv.WaitMount(); err != nil {
		srv.Unmount()
		return nil, fmt.Errorf("fuse: mount %s: %w", mnt, err)
	}
	return srv, nil
}

func (r *rawFS) String() string { return "vafs" }

// writable tells whether open flags allow writing (the kernel passes the
// same flags to release).
func writable(flags uint32) bool { return flags&syscall.O_ACCMODE != syscall.O_RDONLY }

func fillAttr(a vfs.Attr, out *gofuse.Attr) {
	out.Ino = a.Ino
	out.Size = a.Size
	out.Blocks = a.Blocks
	out.Mode = a.Mode
	out.Nlink = a.Nlink
	out.Uid, out.Gid = a.Uid, a.Gid
	out.Rdev = a.Rdev
	out.Blksize = vfs.BlockSize
	out.SetTimes(&a.Atime, &a.Mtime, &a.Ctime)
}

func fillEntry(a vfs.Attr, out *gofuse.EntryOut) {
	out.NodeId = a.Ino
	out.Generation = 1
	out.SetEntryTimeout(ttlFor(a.Ino))
	out.SetAttrTimeout(ttlFor(a.Ino))
	fillAttr(a, &out.Attr)
}

func (r *rawFS) errno(op string, err error) gofuse.Status { return toErrno(r.lg, op, err) }

func (r *rawFS) Lookup(_ <-chan struct{}, h *gofuse.InHeader, name string, out *gofuse.EntryOut) gofuse.Status {
	var a vfs.Attr
	var err error
	switch {
	case isVirtual(h.NodeId):
		a, err = r.virtLookup(h.NodeId, name)
	case reservedName(h.NodeId, name):
		a, err = r.virtAttr(snapRoot)
	default:
		a, err = r.fs.Lookup(h.NodeId, name)
	}
	if err != nil {
		return r.errno("lookup", err)
	}
	fillEntry(a, out)
	return gofuse.OK
}

func (r *rawFS) Forget(nodeid, nlookup uint64) {}

func (r *rawFS) GetAttr(_ <-chan struct{}, in *gofuse.GetAttrIn, out *gofuse.AttrOut) gofuse.Status {
	a, err := r.getAttr(in.NodeId)
	if err != nil {
		return r.errno("getattr", err)
	}
	out.SetTimeout(ttlFor(in.NodeId))
	fillAttr(a, &out.Attr)
	return gofuse.OK
}

// getAttr is GetAttr for any node, real or virtual.
func (r *rawFS) getAttr(node uint64) (vfs.Attr, error) {
	if isVirtual(node) {
		return r.virtAttr(node)
	}
	return r.fs.GetAttr(node)
}

// checkNew refuses to make name in parent under .snapshots (EROFS) or as
// .snapshots in the root (EPERM: the name belongs to the virtual tree).
func checkNew(parent uint64, name string) error {
	if isVirtual(parent) {
		return vfs.ErrReadOnly
	}
	if reservedName(parent, name) {
		return vfs.ErrPerm
	}
	return nil
}

// checkRemove refuses to remove or rename away name in parent when it is
// the virtual tree or inside it.
func checkRemove(parent uint64, name string) error {
	if isVirtual(parent) || reservedName(parent, name) {
		return vfs.ErrReadOnly
	}
	return nil
}

func (r *rawFS) SetAttr(_ <-chan struct{}, in *gofuse.SetAttrIn, out *gofuse.AttrOut) gofuse.Status {
	if isVirtual(in.NodeId) {
		return r.errno("setattr", vfs.ErrReadOnly)
	}
	var s vfs.SetAttrIn
	if m, ok := in.GetMode(); ok {
		s.Mode = &m
	}
	if u, ok := in.GetUID(); ok {
		s.Uid = &u
	}
	if g, ok := in.GetGID(); ok {
		s.Gid = &g
	}
	if sz, ok := in.GetSize(); ok {
		s.Size = &sz
	}
	if t, ok := in.GetATime(); ok {
		s.Atime = &t
	}
	if t, ok := in.GetMTime(); ok {
		s.Mtime = &t
	}
	if in.Valid&gofuse.FATTR_KILL_SUIDGID != 0 {
		// Truncate by a caller without CAP_FSETID, or chown of a
		// non-directory: the kernel leaves it to us (HANDLE_KILLPRIV_V2).
		// A mode set by the same call is applied after, and wins.
		if err := r.killPriv(in.NodeId); err != nil {
			return r.errno("setattr", err)
		}
	}
	a, err := r.fs.SetAttr(in.NodeId, s)
	if err != nil {
		return r.errno("setattr", err)
	}
	out.SetTimeout(ttl)
	fillAttr(a, &out.Attr)
	return gofuse.OK
}

func (r *rawFS) Mknod(_ <-chan struct{}, in *gofuse.MknodIn, name string, out *gofuse.EntryOut) gofuse.Status {
	if err := checkNew(in.NodeId, name); err != nil {
		return r.errno("mknod", err)
	}
	a, err := r.fs.Create(in.NodeId, name, in.Mode, in.Rdev, in.Caller.Uid, in.Caller.Gid)
	if err != nil {
		return r.errno("mknod", err)
	}
	fillEntry(a, out)
	return gofuse.OK
}

func (r *rawFS) Mkdir(_ <-chan struct{}, in *gofuse.MkdirIn, name string, out *gofuse.EntryOut) gofuse.Status {
	if err := checkNew(in.NodeId, name); err != nil {
		return r.errno("mkdir", err)
	}
	a, err := r.fs.Mkdir(in.NodeId, name, in.Mode, in.Caller.Uid, in.Caller.Gid)
	if err != nil {
		return r.errno("mkdir", err)
	}
	fillEntry(a, out)
	return gofuse.OK
}

func (r *rawFS) Unlink(_ <-chan struct{}, h *gofuse.InHeader, name string) gofuse.Status {
	if err := checkRemove(h.NodeId, name); err != nil {
		return r.errno("unlink", err)
	}
	return r.errno("unlink", r.fs.Unlink(h.NodeId, name))
}

func (r *rawFS) Rmdir(_ <-chan struct{}, h *gofuse.InHeader, name string) gofuse.Status {
	if err := checkRemove(h.NodeId, name); err != nil {
		return r.errno("rmdir", err)
	}
	return r.errno("rmdir", r.fs.Rmdir(h.NodeId, name))
}

func (r *rawFS) Rename(_ <-chan struct{}, in *gofuse.RenameIn, oldName, newName string) gofuse.Status {
	if err := checkRemove(in.NodeId, oldName); err != nil {
		return r.errno("rename", err)
	}
	if err := checkNew(in.Newdir, newName); err != nil {
		return r.errno("rename", err)
	}
	return r.errno("rename", r.fs.Rename(in.NodeId, oldName, in.Newdir, newName, in.Flags))
}

func (r *rawFS) Link(_ <-chan struct{}, in *gofuse.LinkIn, name string, out *gofuse.EntryOut) gofuse.Status {
	if isVirtual(in.Oldnodeid) {
		return r.errno("link", vfs.ErrReadOnly)
	}
	if err := checkNew(in.NodeId, name); err != nil {
		return r.errno("link", err)
	}
	a, err := r.fs.Link(in.Oldnodeid, in.NodeId, name)
	if err != nil {
		return r.errno("link", err)
	}
	fillEntry(a, out)
	return gofuse.OK
}

func (r *rawFS) Symlink(_ <-chan struct{}, h *gofuse.InHeader, target, name string, out *gofuse.EntryOut) gofuse.Status {
	if err := checkNew(h.NodeId, name); err != nil {
		return r.errno("symlink", err)
	}
	a, err := r.fs.Symlink(h.NodeId, name, target, h.Caller.Uid, h.Caller.Gid)
	if err != nil {
		return r.errno("symlink", err)
	}
	fillEntry(a, out)
	return gofuse.OK
}

func (r *rawFS) Readlink(_ <-chan struct{}, h *gofuse.InHeader) ([]byte, gofuse.Status) {
	if isVirtual(h.NodeId) {
		return nil, r.errno("readlink", vfs.ErrInvalid) // no symlinks under .snapshots
	}
	t, err := r.fs.Readlink(h.NodeId)
	if err != nil {
		return nil, r.errno("readlink", err)
	}
	return []byte(t), gofuse.OK
}

func (r *rawFS) Access(_ <-chan struct{}, in *gofuse.AccessIn) gofuse.Status {
	_, err := r.getAttr(in.NodeId)
	if err == nil && isVirtual(in.NodeId) && in.Mask&2 != 0 { // W_OK
		err = vfs.ErrReadOnly
	}
	return r.errno("access", err)
}

func (r *rawFS) GetXAttr(_ <-chan struct{}, h *gofuse.InHeader, attr string, dest []byte) (uint32, gofuse.Status) {
	if isVirtual(h.NodeId) {
		// Nothing under .snapshots has extended attributes.
		if _, err := r.virtAttr(h.NodeId); err != nil {
			return 0, r.errno("getxattr", err)
		}
		return 0, r.errno("getxattr", vfs.ErrNoAttr)
	}
	v, err := r.fs.GetXattr(h.NodeId, attr)
	if err != nil {
		return 0, r.errno("getxattr", err)
	}
	if len(dest) == 0 {
		return uint32(len(v)), gofuse.OK
	}
	if len(dest) < len(v) {
		return uint32(len(v)), gofuse.ERANGE
	}
	return uint32(copy(dest, v)), gofuse.OK
}

func (r *rawFS) ListXAttr(_ <-chan struct{}, h *gofuse.InHeader, dest []byte) (uint32, gofuse.Status) {
	var names []string
	var err error
	if isVirtual(h.NodeId) {
		_, err = r.virtAttr(h.NodeId)
	} else {
		names, err = r.fs.ListXattr(h.NodeId)
	}
	if err != nil {
		return 0, r.errno("listxattr", err)
	}
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n)
		b.WriteByte(0)
	}
	if len(dest) == 0 {
		return uint32(b.Len()), gofuse.OK
	}
	if len(dest) < b.Len() {
		return uint32(b.Len()), gofuse.ERANGE
	}
	return uint32(copy(dest, b.String())), gofuse.OK
}

func (r *rawFS) SetXAttr(_ <-chan struct{}, in *gofuse.SetXAttrIn, attr string, data []byte) gofuse.Status {
	if isVirtual(in.NodeId) {
		return r.errno("setxattr", vfs.ErrReadOnly)
	}
	return r.errno("setxattr", r.fs.SetXattr(in.NodeId, attr, data, in.Flags))
}

func (r *rawFS) RemoveXAttr(_ <-chan struct{}, h *gofuse.InHeader, attr string) gofuse.Status {
	if isVirtual(h.NodeId) {
		return r.errno("removexattr", vfs.ErrReadOnly)
	}
	return r.errno("removexattr", r.fs.RemoveXattr(h.NodeId, attr))
}

func (r *rawFS) Create(_ <-chan struct{}, in *gofuse.CreateIn, name string, out *gofuse.CreateOut) gofuse.Status {
	if err := checkNew(in.NodeId, name); err != nil {
		return r.errno("create", err)
	}
	a, err := r.fs.Create(in.NodeId, name, in.Mode, 0, in.Caller.Uid, in.Caller.Gid)
	if err != nil {
		return r.errno("create", err)
	}
	if _, err := r.fs.Open(a.Ino, writable(in.Flags)); err != nil {
		return r.errno("create", err)
	}
	fillEntry(a, &out.EntryOut)
	out.OpenOut.Fh = a.Ino
	return gofuse.OK
}

func (r *rawFS) Open(_ <-chan struct{}, in *gofuse.OpenIn, out *gofuse.OpenOut) gofuse.Status {
	if isVirtual(in.NodeId) {
		return r.errno("open", r.openSnapshot(in, out))
	}
	if in.Mode&gofuse.OPEN_KILL_SUIDGID != 0 {
		// O_TRUNC by a caller without CAP_FSETID (HANDLE_KILLPRIV_V2).
		if err := r.killPriv(in.NodeId); err != nil {
			return r.errno("open", err)
		}
	}
	a, err := r.fs.Open(in.NodeId, writable(in.Flags))
	if err != nil {
		return r.errno("open", err)
	}
	if a.IsDir() {
		r.fs.Release(in.NodeId, writable(in.Flags))
		return gofuse.EISDIR
	}
	out.Fh = in.NodeId
	// Only this mount changes the files, so the page cache stays valid
	// across opens.
	out.OpenFlags |= gofuse.FOPEN_KEEP_CACHE | gofuse.FOPEN_PARALLEL_DIRECT_WRITES
	return gofuse.OK
}

// openSnapshot opens a snapshot file, read-only. No fs.Open: a snapshot
// has no open count (deleting it while open makes reads fail).
func (r *rawFS) openSnapshot(in *gofuse.OpenIn, out *gofuse.OpenOut) error {
	a, err := r.virtAttr(in.NodeId)
	if err != nil {
		return err
	}
	if a.IsDir() {
		return vfs.ErrIsDir
	}
	if writable(in.Flags) || in.Flags&syscall.O_TRUNC != 0 {
		return vfs.ErrReadOnly
	}
	out.Fh = in.NodeId
	// A snapshot never changes (a name deleted and made again is a new
	// id, hence a new node): its cached pages stay valid.
	out.OpenFlags |= gofuse.FOPEN_KEEP_CACHE
	return nil
}

func (r *rawFS) Read(_ <-chan struct{}, in *gofuse.ReadIn, buf []byte) (gofuse.ReadResult, gofuse.Status) {
	var n int
	var err error
	if isSnapshot(in.NodeId) {
		n, err = r.fs.ReadSnapshotAt(snapID(in.NodeId), buf[:in.Size], int64(in.Offset))
	} else {
		n, err = r.fs.ReadAt(in.NodeId, buf[:in.Size], int64(in.Offset))
	}
	if err != nil {
		return nil, r.errno("read", err)
	}
	return gofuse.ReadResultData(buf[:n]), gofuse.OK
}

func (r *rawFS) Write(_ <-chan struct{}, in *gofuse.WriteIn, data []byte) (uint32, gofuse.Status) {
	if isVirtual(in.NodeId) {
		return 0, r.errno("write", vfs.ErrReadOnly)
	}
	if in.WriteFlags&gofuse.WRITE_KILL_SUIDGID != 0 {
		// A writer without CAP_FSETID: drop suid/sgid and capabilities
		// before the data lands (HANDLE_KILLPRIV_V2).
		if err := r.killPriv(in.NodeId); err != nil {
			return 0, r.errno("write", err)
		}
	}
	n, err := r.fs.WriteAt(in.NodeId, data, int64(in.Offset))
	if err != nil {
		return 0, r.errno("write", err)
	}
	return uint32(n), gofuse.OK
}

func (r *rawFS) Lseek(_ <-chan struct{}, in *gofuse.LseekIn, out *gofuse.LseekOut) gofuse.Status {
	if in.Whence != vfs.SeekData && in.Whence != vfs.SeekHole {
		return gofuse.ENOSYS // the kernel handles SEEK_SET/CUR/END itself
	}
	var off uint64
	var err error
	if isSnapshot(in.NodeId) {
		off, err = r.snapLseek(in.NodeId, in.Offset, in.Whence)
	} else if isVirtual(in.NodeId) {
		err = vfs.ErrIsDir
	} else {
		off, err = r.fs.Lseek(in.NodeId, in.Offset, int(in.Whence))
	}
	if err != nil {
		return r.errno("lseek", err)
	}
	out.Offset = off
	return gofuse.OK
}

func (r *rawFS) Release(_ <-chan struct{}, in *gofuse.ReleaseIn) {
	if isVirtual(in.NodeId) {
		return // openSnapshot counted nothing
	}
	if err := r.fs.Release(in.NodeId, writable(in.Flags)); err != nil {
		r.lg.Printf("release %d: %v", in.NodeId, err)
	}
}

func (r *rawFS) Flush(_ <-chan struct{}, in *gofuse.FlushIn) gofuse.Status { return gofuse.OK }

func (r *rawFS) Fsync(_ <-chan struct{}, in *gofuse.FsyncIn) gofuse.Status {
	if isVirtual(in.NodeId) {
		return gofuse.OK // nothing to make durable: snapshots are durable when made
	}
	return r.errno("fsync", r.fs.Fsync(in.NodeId))
}

func (r *rawFS) FsyncDir(_ <-chan struct{}, in *gofuse.FsyncIn) gofuse.Status {
	if isVirtual(in.NodeId) {
		return gofuse.OK
	}
	return r.errno("fsyncdir", r.fs.Fsync(in.NodeId))
}

func (r *rawFS) Fallocate(_ <-chan struct{}, in *gofuse.FallocateIn) gofuse.Status {
	if isVirtual(in.NodeId) {
		return r.errno("fallocate", vfs.ErrReadOnly)
	}
	return r.errno("fallocate", r.fs.Fallocate(in.NodeId, in.Mode, in.Offset, in.Length))
}

func (r *rawFS) CopyFileRange(_ <-chan struct{}, in *gofuse.CopyFileRangeIn) (uint32, gofuse.Status) {
	// EOPNOTSUPP, not ENOSYS: ENOSYS would turn copy_file_range off for
	// the whole mount. On EOPNOTSUPP the kernel copies this one itself.
	if isVirtual(in.NodeId) {
		return 0, r.errno("copy_file_range", vfs.ErrNotSupported)
	}
	if isVirtual(in.NodeIdOut) {
		return 0, r.errno("copy_file_range", vfs.ErrReadOnly)
	}
	n, err := r.fs.CopyRange(in.NodeId, in.OffIn, in.NodeIdOut, in.OffOut, min(in.Len, 1<<30))
	if err != nil && n == 0 {
		return 0, r.errno("copy_file_range", err)
	}
	return uint32(n), gofuse.OK
}

func (r *rawFS) OpenDir(_ <-chan struct{}, in *gofuse.OpenIn, out *gofuse.OpenOut) gofuse.Status {
	var ents []meta.DirEntry
	var err error
	if isVirtual(in.NodeId) {
		ents, err = r.virtReadDir(in.NodeId)
	} else {
		ents, err = r.fs.ReadDir(in.NodeId)
		if in.NodeId == meta.RootIno {
			ents = hideSnapshotsDir(ents)
		}
	}
	if err != nil {
		return r.errno("opendir", err)
	}
	r.mu.Lock()
	r.nextFh++
	fh := r.nextFh
	r.dirs[fh] = ents
	r.mu.Unlock()
	out.Fh = fh
	return gofuse.OK
}

// ReadDir serves the listing taken at opendir, so a directory changed
// while it is being read is listed consistently (offsets stay valid).
func (r *rawFS) ReadDir(_ <-chan struct{}, in *gofuse.ReadIn, out *gofuse.DirEntryList) gofuse.Status {
	r.mu.Lock()
	ents, ok := r.dirs[in.Fh]
	r.mu.Unlock()
	if !ok {
		return gofuse.EBADF
	}
	for i := in.Offset; i < uint64(len(ents))+2; i++ {
		var e gofuse.DirEntry
		switch i {
		case 0:
			e = gofuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: in.NodeId}
		case 1:
			e = gofuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR}
		default:
			d := ents[i-2]
			e = gofuse.DirEntry{Name: d.Name, Mode: d.Type, Ino: d.Ino}
		}
		e.Off = i + 1
		if !out.AddDirEntry(e) {
			break
		}
	}
	return gofuse.OK
}

func (r *rawFS) ReleaseDir(in *gofuse.ReleaseIn) {
	r.mu.Lock()
	delete(r.dirs, in.Fh)
	r.mu.Unlock()
}

func (r *rawFS) StatFs(_ <-chan struct{}, h *gofuse.InHeader, out *gofuse.StatfsOut) gofuse.Status {
	s, err := r.fs.StatFS()
	if err != nil {
		return r.errno("statfs", err)
	}
	out.Blocks, out.Bfree, out.Bavail = s.Blocks, s.Bfree, s.Bavail
	out.Files, out.Ffree = s.Files, s.Ffree
	out.Bsize, out.Frsize = vfs.BlockSize, vfs.BlockSize
	out.NameLen = s.NameLen
	return gofuse.OK
}

// capXattr holds a file's capabilities; a write by an unprivileged caller
// drops it, as it drops suid.
const capXattr = "security.capability"

// killPrivMode is mode less what a write, truncate or chown drops: suid,
// and sgid when group-executable (sgid without group-exec marks mandatory
// locking, not privilege, and stays), as the kernel's VFS does.
func killPrivMode(mode uint32) uint32 {
	m := mode &^ syscall.S_ISUID
	if mode&(syscall.S_ISGID|syscall.S_IXGRP) == syscall.S_ISGID|syscall.S_IXGRP {
		m &^= syscall.S_ISGID
	}
	return m
}

// killPriv does what HANDLE_KILLPRIV_V2 leaves to the server: drop suid,
// sgid and security.capability of ino. The common case (no such bits, no
// capability) costs two reads and takes no namespace lock.
func (r *rawFS) killPriv(ino uint64) error {
	a, err := r.fs.GetAttr(ino)
	if err != nil {
		return err
	}
	if a.IsDir() {
		return nil
	}
	if m := killPrivMode(a.Mode); m != a.Mode {
		if _, err := r.fs.SetAttr(ino, vfs.SetAttrIn{Mode: &m}); err != nil {
			return err
		}
	}
	if _, err := r.fs.GetXattr(ino, capXattr); errors.Is(err, vfs.ErrNoAttr) {
		return nil
	} else if err != nil {
		return err
	}
	if err := r.fs.RemoveXattr(ino, capXattr); err != nil && !errors.Is(err, vfs.ErrNoAttr) {
		return err
	}
	return nil
}
