package fs

// Room "lifecycle" (doc.go, "Rooms"): the FS and its Options, Open (the
// data dir lock, recovery, the fsync journal's replay), Close, statfs. It
// may call every room.

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/meta"
)

// BlockSize is the volume block size.
const BlockSize = blocks.BlockSize

// Options configures Open.
type Options struct {
	DataDir string       // locked, holds meta/ (Pebble)
	Store   blocks.Store // where segments live (cachessd on a single host)
	MemMeta bool         // keep Pebble in memory (tests)
	// MetaFS, when set, is the file system Pebble lives on (tests: a
	// vfs.NewStrictMem to model a power cut); the real one otherwise.
	MetaFS vfs.FS
	Logger *log.Logger
	// CommitInterval is how often dirty state is committed in the
	// background (default 5 s); fsync commits at once. Writes held in the
	// write-back cache wait for DirtyExpire instead.
	CommitInterval time.Duration
	// DirtyExpire is how old the oldest write in the write-back cache gets
	// before the background commit writes the cache out (0: the host's
	// vm.dirty_expire_centisecs, as the kernel does for a plain file's
	// dirty pages; 30 s if unreadable). The background commit looks every
	// CommitInterval, or every DirtyExpire if that is shorter.
	DirtyExpire   time.Duration
	SegmentBlocks uint32 // records per segment (tests make it small)
	// CompactInterval is how often the background compaction pass runs
	// (0: every 30 s; negative: never, only Compact).
	CompactInterval time.Duration
	// WriteCache is the size in bytes of the write-back cache (fs/wcache.go;
	// 0: DefaultWriteCache; negative: no cache, every write goes to the
	// log at once).
	WriteCache int64
	// NoFsyncJournal turns the fsync journal off (fs/journal.go): every
	// fsync then writes the volume's cached blocks to the log and commits.
	NoFsyncJournal bool

	// volumeClass, when set, says which placement class each volume's
	// blocks go to (tests; see FS.volumeClass).
	volumeClass func(ino uint64) blocks.Class
}

// FS is one mounted data dir.
type FS struct {
	opts  Options
	lock  *os.File
	db    *meta.DB
	trees *meta.Trees
	log   *blocks.Log
	lg    *log.Logger

	state    sync.RWMutex
	commitMu sync.Mutex
	// group commit of commitMeta: requests registered, and the last
	// request a successful commit covered.
	groupMu             sync.Mutex
	groupReq, groupDone uint64
	gcMu                sync.RWMutex
	nsMu                sync.Mutex

	vmu  sync.Mutex
	vols map[uint64]*volume

	// The fsync journal (fs/journal.go): jmu is held shared by a record on
	// its way to Pebble, exclusively by a commit that changes the trees
	// (rollback...); jvols lists the volumes that ever wrote a record.
	jmu   sync.RWMutex
	jvmu  sync.Mutex
	jvols map[uint64]*volume

	stop   chan struct{}
	done   chan struct{}
	wbDone chan struct{}

	wc *wcache // the write-back cache (fs/wcache.go)
	// memory pressure (fs/mempressure.go): the file of the last PSI event,
	// events relieved, when one was last logged (unix nanoseconds).
	pressureFrom   atomic.Pointer[string]
	pressureEvents atomic.Int64
	pressureLogged atomic.Int64

	compactor *compactor   // background compaction (fs/compact.go)
	cpass     compactState // passes one at a time (fs/compact.go)

	invalidate func(ino uint64) // set by the binding; may be nil

	viewHook func() // tests: runs in describe and df once their view is taken (usage.go)

	syncFailLogged atomic.Bool // the log's sync failed and it was said (once)

	inoCountMu sync.Mutex
	inoCount   uint64 // inodes in use, as of inoCountAt (statfs)
	inoCountAt time.Time
}

type volume struct {
	wmu     sync.RWMutex // shared by whole-block writes and flush steps, exclusive for everything else
	opens   int
	writers int // opens that may write
	c       volCache
}

// Open locks the data dir, opens the metadata and the block log, reclaims
// what a crash left behind, and starts the background committer.
func Open(opts Options) (*FS, error) {
	if opts.Store == nil {
		return nil, fmt.Errorf("fs: no block store")
	}
	if opts.Logger == nil {
		opts.Logger = log.New(os.Stderr, "vafs: ", log.LstdFlags)
	}
	if opts.CommitInterval == 0 {
		opts.CommitInterval = 5 * time.Second
	}
	if opts.WriteCache == 0 {
		opts.WriteCache = DefaultWriteCache()
	}
	if lim, where := CgroupMemoryLimit(); lim > 0 && opts.WriteCache > lim/cgroupShare {
		// The cache's dirty pages cannot be reclaimed: keep them to a
		// share of the cgroup's limit (fs/mempressure.go).
		opts.Logger.Printf("write cache: %d MiB instead of %d MiB, 1/%d of the memory limit %d MiB of cgroup %s",
			lim/cgroupShare>>20, opts.WriteCache>>20, cgroupShare, lim>>20, where)
		opts.WriteCache = max(lim/cgroupShare, cacheSlabBytes)
	}
	if opts.DirtyExpire == 0 {
		opts.DirtyExpire = HostDirtyExpire()
	}
	lock, err := LockDataDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	f := &FS{opts: opts, lock: lock, lg: opts.Logger, vols: map[uint64]*volume{}, jvols: map[uint64]*volume{},
		stop: make(chan struct{}), done: make(chan struct{}), wbDone: make(chan struct{}),
		wc: newWCache(opts.WriteCache)}
	if err := f.open(); err != nil {
		if f.db != nil {
			f.db.Close()
		}
		lock.Close()
		return nil, err
	}
	go f.committer()
	if f.wc.on() {
		go f.writeBack()
	} else {
		close(f.wbDone)
	}
	f.compactor = f.startCompactor()
	return f, nil
}

func (f *FS) open() error {
	var err error
	switch {
	case f.opts.MetaFS != nil:
		f.db, err = meta.Open("meta", f.opts.MetaFS)
	case f.opts.MemMeta:
		f.db, err = meta.OpenMem()
	default:
		f.db, err = meta.Open(filepath.Join(f.opts.DataDir, "meta"), nil)
	}
	if err != nil {
		return err
	}
	if f.trees, err = meta.OpenTrees(f.db); err != nil {
		return err
	}
	sb := f.db.Super()
	f.log, err = blocks.OpenLog(f.opts.Store, blocks.LogConfig{Host: sb.HostID, NextSeq: sb.NextSeq, SegmentBlocks: f.opts.SegmentBlocks})
	if err != nil {
		return err
	}
	return f.recover()
}

// recover reclaims volumes unlinked while open and volumes whose inode a
// crash removed before their tree was dropped, then this host's segments
// that a walk of the committed trees finds unreferenced (appended after
// the last commit, or dead ones whose removal a crash interrupted).
func (f *FS) recover() error {
	orphans, err := f.db.Orphans()
	if err != nil {
		return err
	}
	b := f.db.NewBatch()
	for _, ino := range orphans {
		if err := f.trees.DeleteVolume(ino); err != nil {
			b.Close()
			return err
		}
		b.DelInode(ino)
		b.DelOrphan(ino)
	}
	if err := b.Commit(false); err != nil {
		return err
	}
	heads, err := f.trees.Volumes()
	if err != nil {
		return err
	}
	for _, ino := range heads {
		if _, err := f.db.GetInode(ino); errors.Is(err, meta.ErrNotFound) {
			if err := f.trees.DeleteVolume(ino); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
	}
	if err := f.replayJournal(); err != nil {
		return fmt.Errorf("fs: fsync journal: %w", err)
	}
	if err := f.Commit(); err != nil {
		return err
	}
	restored, err := f.reclaim(true)
	if err != nil {
		return err
	}
	if restored {
		// Make the counts the walk restored durable now, not at the
		// first commit.
		if err := f.Commit(); err != nil {
			return err
		}
	}
	if len(orphans) > 0 {
		f.lg.Printf("reclaimed %d files unlinked while open", len(orphans))
	}
	return nil
}

// sweep removes, at close, the last open segment if no committed tree
// references it. Like the sweep at open (reclaim, fs/sweep.go), a walk
// decides, not the count alone, and it runs only when some segment of
// this host has no live count. Only called when nothing is being written.
func (f *FS) sweep() error {
	_, err := f.reclaim(false)
	return err
}

// LockDataDir creates dir if needed and takes its lock file; a second
// holder gets ErrLocked naming the first one's pid.
func LockDataDir(dir string) (*os.File, error) {
	_, statErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("fs: data dir %s cannot be created: %w", dir, err)
	}
	if statErr != nil {
		// A new data dir: make its name durable (meta/ inside it is made
		// durable by meta.Open), or a power cut could take it back.
		if err := syncDirOf(dir); err != nil {
			return nil, err
		}
	}
	lf, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("fs: data dir %s is not writable: %w", dir, err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid := make([]byte, 32)
		n, _ := lf.ReadAt(pid, 0)
		lf.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			// A mount writes its pid; a vafs fsck (shared lock) writes
			// nothing, so the pid may be a mount's that has exited.
			p := strings.TrimSpace(string(pid[:n]))
			if _, err := os.Stat("/proc/" + p); p == "" || err != nil {
				return nil, fmt.Errorf("%w: %s is in use by another vafs (a vafs fsck, or a mount that is exiting)", ErrLocked, dir)
			}
			return nil, fmt.Errorf("%w: %s is in use by another vafs (pid %s)", ErrLocked, dir, p)
		}
		return nil, fmt.Errorf("fs: lock %s: %w", dir, err)
	}
	lf.Truncate(0)
	if _, err := lf.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		lf.Close()
		return nil, fmt.Errorf("fs: data dir %s is not writable: %w", dir, err)
	}
	return lf, nil
}

// LockHolder returns the pid written in a data dir's lock file (0 if none).
func LockHolder(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "LOCK"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// HostDirtyExpire is the host's vm.dirty_expire_centisecs (at most 10
// minutes; 30 s, the kernel's default, if it cannot be read).
func HostDirtyExpire() time.Duration {
	b, err := os.ReadFile("/proc/sys/vm/dirty_expire_centisecs")
	if err != nil {
		return 30 * time.Second
	}
	cs, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || cs <= 0 {
		return 30 * time.Second
	}
	return min(time.Duration(cs)*10*time.Millisecond, 10*time.Minute)
}

// Close commits and closes everything. The FS cannot be used afterwards.
func (f *FS) Close() error {
	f.compactor.Stop() // before the committer: a pass ends with a commit
	close(f.stop)
	<-f.done
	<-f.wbDone
	err := f.Commit()
	f.wc.trim()
	if e := f.log.Close(); err == nil {
		err = e
	}
	if err == nil {
		err = f.sweep() // the last open segment, if nothing references it
	}
	if e := f.db.Close(); err == nil {
		err = e
	}
	f.lock.Close()
	return err
}

// StatFS reports the capacity of the medium the blocks live on.
type StatFS struct {
	Blocks, Bfree, Bavail uint64 // in BlockSize units
	Files, Ffree          uint64
	NameLen               uint32
}

// StatFS reports vafs's own space: used is what it stores (segment files,
// preallocated space included, and the metadata), free and available are
// what it can still write (the medium's free space less the metadata
// reserve), and the size is their sum, so `df` on an empty mount shows
// nearly nothing used whatever else the host disk holds. Used inodes are
// the inodes in use.
func (f *FS) StatFS() (StatFS, error) {
	_, avail, err := f.log.Space()
	if err != nil {
		return StatFS{}, fmt.Errorf("fs: statfs: %w", err)
	}
	used := f.log.Stored() + f.db.Usage()
	inodes, err := f.inodesInUse()
	if err != nil {
		return StatFS{}, fmt.Errorf("fs: statfs: %w", err)
	}
	const maxInodes = 1 << 40
	return StatFS{Blocks: (used + avail) / BlockSize, Bfree: avail / BlockSize, Bavail: avail / BlockSize,
		Files: maxInodes, Ffree: maxInodes - min(inodes, maxInodes), NameLen: MaxName}, nil
}

// inodesInUse counts the inodes, at most once a second (a scan of the
// inode keys; df and monitoring call statfs often).
func (f *FS) inodesInUse() (uint64, error) {
	f.inoCountMu.Lock()
	defer f.inoCountMu.Unlock()
	if time.Since(f.inoCountAt) < time.Second {
		return f.inoCount, nil
	}
	n, err := f.db.InodeCount()
	if err != nil {
		return 0, err
	}
	f.inoCount, f.inoCountAt = n, time.Now()
	return n, nil
}

// syncDirOf fsyncs the parent directory of path.
func syncDirOf(path string) error {
	d, err := os.Open(filepath.Dir(filepath.Clean(path)))
	if err != nil {
		return fmt.Errorf("fs: sync parent of %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fs: sync parent of %s: %w", path, err)
	}
	return nil
}

// replayJournal applies, at mount, the records a crash left: in order, each
// record's blocks within the volume's size are written to the log and
// mapped, and its times kept when newer; then one commit makes that
// durable and deletes them. A crash in between replays them again (a
// record rewrites the same blocks with the same data).
func (f *FS) replayJournal() error {
	type key struct{ ino, seq uint64 }
	var keys []key
	var blocksN int
	err := f.db.Journal(func(r *meta.JournalRecord) error {
		keys = append(keys, key{r.Ino, r.Seq})
		in, err := f.db.GetInode(r.Ino)
		if errors.Is(err, meta.ErrNotFound) {
			return nil // deleted since
		}
		if err != nil {
			return err
		}
		if in.Mode&syscall.S_IFMT != syscall.S_IFREG {
			return nil
		}
		h, err := f.trees.Head(r.Ino)
		if err != nil {
			return err
		}
		end := (h.Size + BlockSize - 1) / BlockSize
		for _, run := range r.Runs {
			n := uint64(len(run.Data) / BlockSize)
			if run.First >= end {
				continue
			}
			n = min(n, end-run.First)
			if err := f.putBlocks(r.Ino, run.First, run.Data[:n*BlockSize]); err != nil {
				return err
			}
			blocksN += int(n)
		}
		if r.Mtime > h.Mtime {
			return f.trees.SetTimes(r.Ino, r.Mtime, max(r.Ctime, h.Ctime))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return nil
	}
	if err := f.commitWith(func(b *meta.Batch) error {
		for _, k := range keys {
			b.DelJournal(k.ino, k.seq)
		}
		return nil
	}); err != nil {
		return err
	}
	f.lg.Printf("applied %d fsync journal records (%d blocks)", len(keys), blocksN)
	return nil
}
