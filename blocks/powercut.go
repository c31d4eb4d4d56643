package blocks

import (
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// PowerCutStore is a Store in memory that models what a power cut leaves
// of a disk, for crash tests that must see a missing sync (a SIGKILL keeps
// the page cache, and MemStore's Sync does nothing, so neither can).
//
// Each segment file has two images: the volatile one, which every write
// changes and every read sees, and the durable one, as of the file's last
// Sync (Sync makes every write completed before it durable, size
// included). Names follow the NameSyncer contract: a Created segment's name
// is durable only after SyncNames.
//
// Crash returns the store a power cut at that moment leaves: every durable
// image and nothing else. It is the model that can lose the most, and so
// the one that shows the most missing syncs:
//   - every byte written since the file's last Sync is gone (size too);
//   - a segment created since the last SyncNames is gone, even if its
//     file was synced;
//   - a Remove is durable at once. A real directory may make an unlink
//     durable at any moment (the next journal commit of anything), and a
//     segment removed too early (before the commit that stops referencing
//     it is durable) is data loss, which only this choice can expose; the
//     other outcome, a removed segment coming back, only leaves garbage,
//     and CrashRandom produces it too.
//
// CrashRandom models that a disk may have persisted any subset of the
// unsynced writes, in any order: for each 4 KiB page written since the
// last Sync it keeps the page as of a random one of the writes that
// touched it (or none), and one page in eight is torn at 512-byte sector
// granularity (each sector chosen alone). A segment created since the last
// SyncNames survives at random; so does a removed one (then as of its last
// Sync). Unsynced truncates and preallocations survive at random.
//
// With direct set, files are DirectFiles (the staged-chunk path of Log,
// which the real store, cachessd, takes): WriteDirect is WriteAt with the
// O_DIRECT alignment checked (a misaligned one fails with EINVAL),
// Allocate grows the file with zeros, Truncate sets the size.
//
// Faults are injected with FailWrite and FailSync: one write or one sync
// fails, the sync as Linux fails it (what it covered is lost for good).
//
// The store is safe for concurrent use; Crash may run while writers are
// still at work (what they write afterwards goes to the old store only).
type PowerCutStore struct {
	mu       sync.Mutex
	direct   bool
	files    map[SegmentID]*pcFile // the volatile namespace
	names    map[SegmentID]*pcFile // the durable namespace: synced names, less removed ones
	removed  map[SegmentID]*pcFile // synced names removed since the last SyncNames
	syncs    atomic.Int64          // file syncs, for tests that want to see them
	writes   atomic.Int64          // file writes (WriteAt, WriteDirect)
	Capacity uint64                // reported by Space; 0 means 1 TiB

	failWrite, failSync fault
}

// fault makes the n-th call from now fail with err, once.
type fault struct {
	mu    sync.Mutex
	n     int // calls left before the failing one; 0: none armed
	err   error
	fired int
}

func (f *fault) arm(n int, err error) {
	f.mu.Lock()
	f.n, f.err = n, err
	f.mu.Unlock()
}

// hit counts a call and returns the error it must fail with, if any.
func (f *fault) hit() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		return nil
	}
	if f.n--; f.n > 0 {
		return nil
	}
	f.fired++
	return f.err
}

func (f *fault) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fired
}

// NewPowerCutStore returns an empty PowerCutStore; direct makes its files
// DirectFiles.
func NewPowerCutStore(direct bool) *PowerCutStore {
	return &PowerCutStore{direct: direct, files: map[SegmentID]*pcFile{}, names: map[SegmentID]*pcFile{},
		removed: map[SegmentID]*pcFile{}}
}

// pcFile is one segment file. data is the volatile image; dur the durable
// one; log the changes since the last Sync, in order (what CrashRandom
// picks from).
type pcFile struct {
	s    *PowerCutStore
	mu   sync.RWMutex
	data []byte
	dur  []byte
	log  []pcChange
}

// pcChange is one unsynced change: a write of data at off, or (data nil) a
// size change to size.
type pcChange struct {
	off  int64
	data []byte
	size int64
}

// pcDirect is a pcFile that is also a DirectFile.
type pcDirect struct{ *pcFile }

const (
	pcPage   = 4096
	pcSector = 512
)

func (s *PowerCutStore) wrap(f *pcFile) SegmentFile {
	if s.direct {
		return pcDirect{f}
	}
	return f
}

// Create makes a new segment; its name is durable after SyncNames.
func (s *PowerCutStore) Create(id SegmentID) (SegmentFile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files[id] != nil {
		return nil, ErrExists
	}
	f := &pcFile{s: s}
	s.files[id] = f
	return s.wrap(f), nil
}

// Open opens a segment; ErrNotFound if absent.
func (s *PowerCutStore) Open(id SegmentID) (SegmentFile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.files[id]
	if f == nil {
		return nil, ErrNotFound
	}
	return s.wrap(f), nil
}

// Remove deletes a segment, durably at once (see the type's comment).
func (s *PowerCutStore) Remove(id SegmentID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.names[id]; f != nil {
		s.removed[id] = f
	}
	delete(s.files, id)
	delete(s.names, id)
	return nil
}

// List returns the segments held (the volatile namespace).
func (s *PowerCutStore) List() ([]SegmentID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]SegmentID, 0, len(s.files))
	for id := range s.files {
		ids = append(ids, id)
	}
	return ids, nil
}

// Space reports Capacity and what the volatile images leave free.
func (s *PowerCutStore) Space() (uint64, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.Capacity
	if c == 0 {
		c = 1 << 40
	}
	var used uint64
	for _, f := range s.files {
		f.mu.RLock()
		used += uint64(len(f.data))
		f.mu.RUnlock()
	}
	if used > c {
		return c, 0, nil
	}
	return c, c - used, nil
}

// SyncNames makes the names of every segment created so far durable
// (NameSyncer).
func (s *PowerCutStore) SyncNames() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.names = make(map[SegmentID]*pcFile, len(s.files))
	for id, f := range s.files {
		s.names[id] = f
	}
	clear(s.removed)
	return nil
}

// FailWrite makes the n-th segment write from now (WriteAt or
// WriteDirect, of any file; n >= 1) fail with err, writing nothing. Once.
func (s *PowerCutStore) FailWrite(n int, err error) { s.failWrite.arm(n, err) }

// FailSync makes the n-th segment file Sync from now (n >= 1) fail with
// err, as a failed fdatasync does on Linux: the writes it covered are
// never made durable (writeback failed and the pages were marked clean),
// though reads still see them until a crash, and a later Sync of the file
// succeeds without writing them. Writes after the failure are made
// durable by a later Sync as usual. Once.
func (s *PowerCutStore) FailSync(n int, err error) { s.failSync.arm(n, err) }

// Faults is how many injected faults fired: writes, syncs.
func (s *PowerCutStore) Faults() (writes, syncs int) { return s.failWrite.count(), s.failSync.count() }

// Writes is the number of segment writes (WriteAt, WriteDirect) so far.
func (s *PowerCutStore) Writes() int { return int(s.writes.Load()) }

// Syncs is the number of segment file Syncs so far.
func (s *PowerCutStore) Syncs() int { return int(s.syncs.Load()) }

// Unsynced is the number of segments whose name or bytes a power cut now
// would lose (0: everything is durable).
func (s *PowerCutStore) Unsynced() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, f := range s.files {
		f.mu.RLock()
		if s.names[id] != f || len(f.log) > 0 {
			n++
		}
		f.mu.RUnlock()
	}
	return n
}

// Crash returns the store a power cut now leaves: the durable images of
// the durable names, nothing else. s itself is unchanged.
func (s *PowerCutStore) Crash() *PowerCutStore { return s.crash(nil) }

// CrashRandom is Crash where the disk persisted a random subset of what
// was not synced (see the type's comment), chosen by seed.
func (s *PowerCutStore) CrashRandom(seed uint64) *PowerCutStore {
	return s.crash(rand.New(rand.NewPCG(seed, 0x9c0ffee)))
}

func (s *PowerCutStore) crash(rng *rand.Rand) *PowerCutStore {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := NewPowerCutStore(s.direct)
	out.Capacity = s.Capacity
	keep := func(id SegmentID, f *pcFile) {
		img := f.image(rng)
		out.files[id] = &pcFile{s: out, data: img, dur: slices.Clone(img)}
		out.names[id] = out.files[id]
	}
	for _, id := range sortedIDs(s.names) {
		keep(id, s.names[id])
	}
	if rng != nil {
		for _, id := range sortedIDs(s.files) {
			if s.names[id] == nil && rng.IntN(2) == 0 { // a name not yet synced persisted anyway
				keep(id, s.files[id])
			}
		}
		for _, id := range sortedIDs(s.removed) {
			if s.files[id] == nil && rng.IntN(2) == 0 { // the removal did not persist
				keep(id, s.removed[id])
			}
		}
	}
	return out
}

// image is the file after a power cut: the durable image, plus (rng set)
// for every page changed since, the page as of a random prefix of the
// changes that touched it, a page in eight torn sector by sector.
func (f *pcFile) image(rng *rand.Rand) []byte {
	f.mu.RLock()
	defer f.mu.RUnlock()
	img := slices.Clone(f.dur)
	if rng == nil || len(f.log) == 0 {
		return img
	}
	// For each page: how many of the changes that touch it it keeps
	// (upto), or, torn (upto < 0), that many for each of its sectors.
	const spp = pcPage / pcSector
	var npages int64
	for _, c := range f.log {
		if c.data != nil {
			npages = max(npages, (c.off+int64(len(c.data))+pcPage-1)/pcPage)
		}
	}
	count := make([]int, npages) // changes that touch each page
	for _, c := range f.log {
		if c.data != nil {
			for p := c.off / pcPage; p <= (c.off+int64(len(c.data))-1)/pcPage; p++ {
				count[p]++
			}
		}
	}
	upto := make([]int, npages)
	var torn map[int64]*[spp]int
	for p, n := range count { // in page order: the draws are a function of the seed
		if n == 0 {
			continue
		}
		if rng.IntN(8) == 0 {
			var u [spp]int
			for i := range u {
				u[i] = rng.IntN(n + 1)
			}
			if torn == nil {
				torn = map[int64]*[spp]int{}
			}
			torn[int64(p)] = &u
			upto[p] = -1
			continue
		}
		upto[p] = rng.IntN(n + 1)
	}
	seen := make([]int, npages) // changes so far that touched each page
	apply := func(c pcChange, from, to int64) {
		if from >= to {
			return
		}
		if end := c.off + int64(len(c.data)); int64(len(img)) < end {
			img = resize(img, end) // the size a write set persists with any of its bytes
		}
		copy(img[from:to], c.data[from-c.off:to-c.off])
	}
	for _, c := range f.log {
		if c.data == nil {
			if rng.IntN(2) == 0 {
				img = resize(img, c.size)
			}
			continue
		}
		end := c.off + int64(len(c.data))
		for p := c.off / pcPage; p <= (end-1)/pcPage; p++ {
			i := seen[p]
			seen[p]++
			if upto[p] >= 0 {
				if i < upto[p] {
					apply(c, max(p*pcPage, c.off), min((p+1)*pcPage, end))
				}
				continue
			}
			for s, k := range torn[p] {
				if i < k {
					u := p*spp + int64(s)
					apply(c, max(u*pcSector, c.off), min((u+1)*pcSector, end))
				}
			}
		}
	}
	return img
}

// sortedIDs: map order is random, and a CrashRandom must be a function
// of its seed.
func sortedIDs(m map[SegmentID]*pcFile) []SegmentID {
	ids := make([]SegmentID, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func resize(b []byte, n int64) []byte {
	if n <= int64(len(b)) {
		return b[:n]
	}
	return append(b, make([]byte, n-int64(len(b)))...)
}

func (f *pcFile) ReadAt(p []byte, off int64) (int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *pcFile) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	f.s.writes.Add(1)
	if err := f.s.failWrite.hit(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(f.data)) {
		f.data = resize(f.data, end)
	}
	f.log = append(f.log, pcChange{off: off, data: slices.Clone(p)})
	return copy(f.data[off:], p), nil
}

// Sync makes the volatile image durable.
func (f *pcFile) Sync() error {
	f.s.syncs.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.s.failSync.hit(); err != nil {
		f.log = nil // lost: never durable, and no later Sync writes them
		return err
	}
	for _, c := range f.log {
		if c.data == nil {
			f.dur = resize(f.dur, c.size)
			continue
		}
		if end := c.off + int64(len(c.data)); end > int64(len(f.dur)) {
			f.dur = resize(f.dur, end)
		}
		copy(f.dur[c.off:], c.data)
	}
	f.log = nil
	// The size is durable now even where a failed sync lost the bytes
	// (they read as the old durable bytes, or zeros).
	f.dur = resize(f.dur, int64(len(f.data)))
	return nil
}

func (f *pcFile) Size() (int64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return int64(len(f.data)), nil
}

func (f *pcFile) Close() error { return nil }

func (f *pcFile) setSize(n int64) {
	f.data = resize(f.data, n)
	f.log = append(f.log, pcChange{size: n})
}

// WriteDirect is WriteAt with O_DIRECT's alignment rules.
func (f pcDirect) WriteDirect(p []byte, off int64) (int, error) {
	if len(p) == 0 || uintptr(unsafe.Pointer(&p[0]))%DirectAlign != 0 || len(p)%DirectAlign != 0 || off%DirectAlign != 0 {
		return 0, syscall.EINVAL
	}
	return f.WriteAt(p, off)
}

// Allocate grows the file to off+n with zeros (fallocate without
// KEEP_SIZE); it never shrinks it.
func (f pcDirect) Allocate(off, n int64) error {
	if off < 0 || n <= 0 {
		return syscall.EINVAL
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if off+n > int64(len(f.data)) {
		f.setSize(off + n)
	}
	return nil
}

// Truncate sets the file's size.
func (f pcDirect) Truncate(size int64) error {
	if size < 0 {
		return syscall.EINVAL
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setSize(size)
	return nil
}

var (
	_ Store      = (*PowerCutStore)(nil)
	_ NameSyncer = (*PowerCutStore)(nil)
	_ DirectFile = pcDirect{}
)
