package meta

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/vafs/vafs/internal/msgpackcheck"
)

const superVersion = 1

// DataFormat is the data dir format this vafs reads and writes (the
// superblock's "fmt"; docs/format.md says what changes it). A data dir of
// a newer format is refused with ErrTooNew, never read as corrupt.
//
//	1  the first
//	2  may hold fsync journal records ("J" keys), which a vafs of format 1
//	   would not apply: a mount raises an older data dir to 2 at open
const DataFormat = 2

// RootIno is the inode number of the root directory.
const RootIno = 1

// Superblock holds the id counters. Each counter is the next value to hand
// out; a value handed out but never committed is simply skipped after a
// crash, never reused.
type Superblock struct {
	HostID   uint32 `msgpack:"host"`
	NextIno  uint64 `msgpack:"ino"`
	NextNode uint64 `msgpack:"node"`
	NextGen  uint64 `msgpack:"gen"`
	NextSeq  uint64 `msgpack:"seq"`  // segment sequence numbers (blocks.Log)
	NextSnap uint64 `msgpack:"snap"` // snapshot ids (0 in data dirs older than snapshots: start at 1)
	Created  int64  `msgpack:"created"`
	Format   uint32 `msgpack:"fmt,omitempty"` // data dir format (absent: 1)
}

// DB is the Pebble database of one data dir.
type DB struct {
	p *pebble.DB
	// r is what reads go to: p, or for a View, a Pebble snapshot (snap).
	r    pebble.Reader
	snap *pebble.Snapshot
	mu   sync.Mutex // guards sb
	sb   Superblock
	// superMu orders the batches that carry the superblock: each encodes
	// S from memory and is applied under it, so the S on disk is always
	// the newest applied and no counter ever moves back (a commit batch
	// built before a create must not land the older S after it).
	superMu  sync.Mutex
	readOnly bool

	getHook func(k []byte) // tests: called before every point read
}

// Open opens (creating if needed) the metadata database in dir. fs may be
// nil for the real file system (tests pass vfs.NewMem()).
func Open(dir string, fs vfs.FS) (*DB, error) { return open(dir, fs, false) }

// OpenReadOnly opens an existing metadata database without changing a
// byte of it (fsck). A directory that holds no vafs metadata is an error
// wrapping ErrNotVafs; nothing is created.
func OpenReadOnly(dir string, fs vfs.FS) (*DB, error) { return open(dir, fs, true) }

func open(dir string, fs vfs.FS, readOnly bool) (*DB, error) {
	opts := &pebble.Options{
		FS: fs,
		// WALs are preallocated to about this size: keep small data disks
		// usable. 8 MiB: fsync journal records (fs/journal.go, at most 4 MiB
		// per volume) are mostly deleted in the memtable they were put in.
		MemTableSize: 8 << 20,
		Logger:       quietLogger{},
		ReadOnly:     readOnly,
	}
	if fs == nil {
		opts.FS = vfs.Default
	}
	if readOnly {
		opts.ErrorIfNotExists = true
		if _, err := opts.FS.Stat(opts.FS.PathJoin(dir, "CURRENT")); err != nil {
			return nil, fmt.Errorf("%w: %s has no metadata database: %v", ErrNotVafs, dir, err)
		}
	}
	p, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("meta: open pebble in %s: %w", dir, err)
	}
	if !readOnly {
		// Pebble syncs its own directory, not the entry of that directory
		// in its parent: on a first mount, until something else makes it
		// durable, a power cut could lose meta/ and every commit in it.
		if err := syncParent(opts.FS, dir); err != nil {
			p.Close()
			return nil, err
		}
	}
	d := &DB{p: p, r: p, readOnly: readOnly}
	v, closer, err := p.Get([]byte{pfxSuper})
	switch {
	case errors.Is(err, pebble.ErrNotFound) && readOnly:
		p.Close()
		return nil, fmt.Errorf("%w: %s has no superblock", ErrNotVafs, dir)
	case errors.Is(err, pebble.ErrNotFound):
		if err := d.initialize(); err != nil {
			p.Close()
			return nil, err
		}
	case err != nil:
		p.Close()
		return nil, fmt.Errorf("meta: read superblock: %w", err)
	default:
		err := DecodeSuperblock(v, &d.sb)
		closer.Close()
		if err != nil {
			p.Close()
			return nil, err
		}
		if !readOnly {
			// Written by the first commit (every batch carrying S writes
			// it from memory), before any record of this format exists.
			d.sb.Format = DataFormat
		}
	}
	return d, nil
}

// DecodeSuperblock decodes the value of the superblock key. A superblock
// written by a newer vafs (a record version or data dir format above this
// one's) is ErrTooNew, anything else undecodable ErrCorrupt.
func DecodeSuperblock(v []byte, sb *Superblock) error {
	if len(v) > 0 && v[0] > superVersion {
		return fmt.Errorf("%w: superblock version %d is newer than this vafs (%d); upgrade vafs", ErrTooNew, v[0], superVersion)
	}
	var s Superblock
	if err := decodeVersioned(v, superVersion, &s); err != nil {
		return fmt.Errorf("meta: superblock: %w", err)
	}
	s.Format = max(s.Format, 1)
	if s.Format > DataFormat {
		return fmt.Errorf("%w: data dir format %d is newer than this vafs (%d); upgrade vafs", ErrTooNew, s.Format, DataFormat)
	}
	s.NextSnap = max(s.NextSnap, 1)
	// 0 means "none" for nodes and generations, and host ids are 24 bits.
	if s.HostID == 0 || s.HostID > 0xffffff || s.NextIno <= RootIno || s.NextNode == 0 || s.NextGen == 0 {
		return fmt.Errorf("meta: superblock: %w: host %d, next inode %d, node %d, generation %d", ErrCorrupt, s.HostID, s.NextIno, s.NextNode, s.NextGen)
	}
	*sb = s
	return nil
}

func (d *DB) initialize() error {
	var r [4]byte
	rand.Read(r[:])
	host := binary.LittleEndian.Uint32(r[:]) & 0xffffff
	if host == 0 {
		host = 1
	}
	now := time.Now().UnixNano()
	d.sb = Superblock{HostID: host, NextIno: RootIno + 1, NextNode: 1, NextGen: 1, NextSeq: 1, NextSnap: 1, Created: now, Format: DataFormat}
	b := d.NewBatch()
	b.PutInode(RootIno, &Inode{Mode: 0o40755, Nlink: 2, Atime: now, Mtime: now, Ctime: now})
	b.PutSuper()
	return b.Commit(true)
}

// Close closes the database.
func (d *DB) Close() error {
	if d.snap != nil {
		return d.snap.Close()
	}
	return d.p.Close()
}

// View returns a read-only DB of what is committed now, read from a Pebble
// snapshot: the trees opened on it (OpenTrees) are one consistent
// committed state whatever commits later, and walking them takes no lock
// of the live trees. It must not write (NewBatch panics). Close releases
// it.
func (d *DB) View() *DB {
	s := d.p.NewSnapshot()
	return &DB{r: s, snap: s, readOnly: true, sb: d.Super()}
}

// Super returns a copy of the superblock as it is in memory.
func (d *DB) Super() Superblock {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sb
}

// SetNextSeq raises the persisted segment sequence counter (written by the
// next batch that calls PutSuper).
func (d *DB) SetNextSeq(seq uint64) {
	d.mu.Lock()
	d.sb.NextSeq = max(d.sb.NextSeq, seq)
	d.mu.Unlock()
}

func (d *DB) alloc(field *uint64) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := *field
	*field++
	return v
}

func (d *DB) allocNode() uint64 { return d.alloc(&d.sb.NextNode) }
func (d *DB) allocGen() uint64  { return d.alloc(&d.sb.NextGen) }

// Flush makes every batch applied so far durable.
func (d *DB) Flush() error { return d.p.LogData(nil, pebble.Sync) }

// Batch is an atomic set of changes.
type Batch struct {
	db    *DB
	b     *pebble.Batch
	super bool // carries the superblock: re-encoded from memory at Commit
}

// NewBatch starts a batch.
func (d *DB) NewBatch() *Batch { return &Batch{db: d, b: d.p.NewBatch()} }

// Commit applies the batch; sync makes it durable before returning.
//
// A batch that carries the superblock writes it as it is in memory at
// this moment, applied under superMu: counters only grow in memory, so
// the S on disk only grows, whatever order batches built at different
// times land in. A synced one is applied without sync under the lock and
// then made durable by a WAL sync outside it (the WAL is ordered: the sync
// covers it), so a create never waits for a commit's disk flush.
func (b *Batch) Commit(sync bool) error {
	defer b.b.Close()
	if b.db.readOnly {
		return fmt.Errorf("meta: commit: %w", ErrReadOnly)
	}
	if b.super {
		d := b.db
		d.superMu.Lock()
		sb := d.Super()
		b.b.Set([]byte{pfxSuper}, encodeVersioned(superVersion, &sb), nil)
		err := b.b.Commit(pebble.NoSync)
		d.superMu.Unlock()
		if err != nil {
			return fmt.Errorf("meta: commit: %w", err)
		}
		if sync {
			if err := d.Flush(); err != nil {
				return fmt.Errorf("meta: commit: sync: %w", err)
			}
		}
		return nil
	}
	opt := pebble.NoSync
	if sync {
		opt = pebble.Sync
	}
	if err := b.b.Commit(opt); err != nil {
		return fmt.Errorf("meta: commit: %w", err)
	}
	return nil
}

// Close discards an uncommitted batch.
func (b *Batch) Close() { b.b.Close() }

// Len is the encoded size of the batch.
func (b *Batch) Len() int { return b.b.Len() }

// AllocIno hands out an inode number and records the counter in b.
func (b *Batch) AllocIno() uint64 {
	ino := b.db.alloc(&b.db.sb.NextIno)
	b.PutSuper()
	return ino
}

// PutSuper writes the superblock as it is in memory when the batch is
// committed (see Commit).
func (b *Batch) PutSuper() {
	b.super = true
}

func encodeVersioned(version byte, v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("meta: encode %T: %v", v, err)) // only our own plain structs are encoded
	}
	return append([]byte{version}, b...)
}

func decodeVersioned(b []byte, version byte, v any) error {
	if len(b) < 1 {
		return fmt.Errorf("%w: empty record", ErrCorrupt)
	}
	if b[0] != version {
		return fmt.Errorf("%w: version %d, want %d", ErrCorrupt, b[0], version)
	}
	// Lengths and nesting are checked before msgpack allocates for them
	// (a corrupt length must not grow memory; meta/inode.go).
	if err := msgpackcheck.Check(b[1:]); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if err := msgpack.Unmarshal(b[1:], v); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return nil
}

// get returns a copy of the value at k, or ErrNotFound.
func (d *DB) get(k []byte) ([]byte, error) {
	if d.getHook != nil {
		d.getHook(k)
	}
	v, closer, err := d.r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("meta: get: %w", err)
	}
	out := append([]byte(nil), v...)
	closer.Close()
	return out, nil
}

// scan calls fn for every key with prefix p, in order, until fn returns false.
func (d *DB) scan(p []byte, fn func(k, v []byte) bool) error {
	it, err := d.r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return fmt.Errorf("meta: iterate: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		if !fn(it.Key(), it.Value()) {
			break
		}
	}
	if err := it.Error(); err != nil {
		it.Close()
		return fmt.Errorf("meta: iterate: %w", err)
	}
	return it.Close()
}

// Usage is the on-disk size of the metadata.
func (d *DB) Usage() uint64 { return d.p.Metrics().DiskSpaceUsage() }

type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	log.Printf("pebble: "+format, args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("vafs: pebble fatal: "+format, args...))
}

// OpenMem opens a database kept in memory (tests).
func OpenMem() (*DB, error) { return Open("meta", vfs.NewMem()) }

// syncParent makes the entry of dir in its parent directory durable.
func syncParent(fs vfs.FS, dir string) error {
	parent := fs.PathDir(dir)
	if parent == "" {
		parent = "."
	}
	f, err := fs.OpenDir(parent)
	if err != nil {
		return fmt.Errorf("meta: open %s: %w", parent, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("meta: sync %s: %w", parent, err)
	}
	return nil
}
