package blocks_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"

	"github.com/vafs/vafs/blocks"
)

// directStore keeps segments in memory as blocks.DirectFiles, so the log
// stages records in chunks. WriteDirect enforces the O_DIRECT alignment
// rules (a misaligned write fails the test) and can be made to fail;
// Allocate grows the file with zeros as fallocate does.
type directStore struct {
	t        *testing.T
	mu       sync.Mutex
	segs     map[blocks.SegmentID]*directMemFile
	fail     atomic.Int32       // WriteDirect calls left to fail with failErr
	failSync atomic.Int32       // Sync calls left to fail with EIO
	syncGate chan chan struct{} // when set, each Sync waits on a channel it sends here
	failErr  error
	direct   atomic.Int64 // bytes written with WriteDirect
	allocs   atomic.Int64 // Allocate calls
	free     uint64       // reported by Space (capacity 1 TiB)
}

type directMemFile struct {
	s    *directStore
	mu   sync.RWMutex
	data []byte
}

func newDirectStore(t *testing.T) *directStore {
	return &directStore{t: t, segs: map[blocks.SegmentID]*directMemFile{}, failErr: syscall.EIO, free: 1 << 39}
}

func (s *directStore) Create(id blocks.SegmentID) (blocks.SegmentFile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.segs[id] != nil {
		return nil, blocks.ErrExists
	}
	f := &directMemFile{s: s}
	s.segs[id] = f
	return f, nil
}

func (s *directStore) Open(id blocks.SegmentID) (blocks.SegmentFile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.segs[id]; f != nil {
		return f, nil
	}
	return nil, blocks.ErrNotFound
}

func (s *directStore) Remove(id blocks.SegmentID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.segs, id)
	return nil
}

func (s *directStore) List() ([]blocks.SegmentID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []blocks.SegmentID
	for id := range s.segs {
		ids = append(ids, id)
	}
	return ids, nil
}

func (s *directStore) Space() (uint64, uint64, error) { return 1 << 40, s.free, nil }

func (f *directMemFile) ReadAt(p []byte, off int64) (int, error) {
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

func (f *directMemFile) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(f.data)) {
		f.data = append(f.data, make([]byte, end-int64(len(f.data)))...)
	}
	return copy(f.data[off:], p), nil
}

func (f *directMemFile) Sync() error {
	if f.s.failSync.Add(-1) >= 0 {
		return syscall.EIO
	}
	if f.s.syncGate != nil {
		release := make(chan struct{})
		f.s.syncGate <- release
		<-release
	}
	return nil
}
func (f *directMemFile) Close() error { return nil }
func (f *directMemFile) Size() (int64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return int64(len(f.data)), nil
}

func (f *directMemFile) Truncate(size int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if size < int64(len(f.data)) {
		f.data = f.data[:size]
	} else {
		f.data = append(f.data, make([]byte, size-int64(len(f.data)))...)
	}
	return nil
}

func (f *directMemFile) WriteDirect(p []byte, off int64) (int, error) {
	if len(p) == 0 || uintptr(unsafe.Pointer(&p[0]))%blocks.DirectAlign != 0 ||
		len(p)%blocks.DirectAlign != 0 || off%blocks.DirectAlign != 0 {
		f.s.t.Errorf("misaligned direct write: %d bytes at %d", len(p), off)
		return 0, syscall.EINVAL
	}
	if f.s.fail.Add(-1) >= 0 {
		return 0, f.s.failErr
	}
	f.s.direct.Add(int64(len(p)))
	return f.WriteAt(p, off)
}

func (f *directMemFile) Allocate(off, n int64) error {
	f.s.allocs.Add(1)
	if sz, _ := f.Size(); sz < off+n {
		_, err := f.WriteAt(make([]byte, off+n-sz), sz)
		return err
	}
	return nil
}

var _ blocks.DirectFile = (*directMemFile)(nil)

// stored reads extent e straight from the store, bypassing the log's
// staging: what a restarted process would find.
func stored(t *testing.T, s blocks.Store, e blocks.Extent) []byte {
	t.Helper()
	f, err := s.Open(e.Seg)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	rec := make([]byte, blocks.RecordSize)
	for i := e.Index; i < e.Index+e.N; i++ {
		if _, err := f.ReadAt(rec, blocks.RecordOffset(i)); err != nil {
			t.Fatalf("record %d of %s is not in the store: %v", i, e.Seg, err)
		}
		data, _, err := blocks.DecodeRecord(rec, e.Seg, i)
		if err != nil {
			t.Fatalf("record %d of %s in the store: %v", i, e.Seg, err)
		}
		out = append(out, data...)
	}
	return out
}

func readExtents(t *testing.T, l *blocks.Log, exts []blocks.Extent) []byte {
	t.Helper()
	var out []byte
	for _, e := range exts {
		buf := make([]byte, int(e.N)*blocks.BlockSize)
		if err := l.Read(e, buf); err != nil {
			t.Fatalf("read %+v: %v", e, err)
		}
		out = append(out, buf...)
	}
	return out
}

func TestChunkGeometry(t *testing.T) {
	// The format's torn-write argument relies on chunk starts being page
	// aligned (docs/format.md, Segments).
	if blocks.ChunkRecords*blocks.RecordSize%blocks.DirectAlign != 0 || blocks.SegHeaderSize%blocks.DirectAlign != 0 {
		t.Fatalf("chunk of %d records is %d bytes: not page aligned", blocks.ChunkRecords, blocks.ChunkRecords*blocks.RecordSize)
	}
	if blocks.ChunkOffset(3) != blocks.RecordOffset(3*blocks.ChunkRecords) {
		t.Fatal("ChunkOffset disagrees with RecordOffset")
	}
}

// Staged records read back before and after they reach the store; Sync
// puts every appended record in the store, including partial chunks, and
// the store then reads back with nothing staged (a restart).
func TestStagedAppendReadSync(t *testing.T) {
	s := newDirectStore(t)
	// 1300 records per segment: chunks of 512, 512 and a short one of 276.
	cfg := blocks.LogConfig{Host: 2, SegmentBlocks: 1300}
	l, err := blocks.OpenLog(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var exts []blocks.Extent
	var want []byte
	for i, n := range []int{1, 3, 700, 1, 511, 90, 600, 7} {
		data := pattern(n, byte(i))
		e, err := l.Append(blocks.ClassReplicated, 4, uint64(len(want)/blocks.BlockSize), data)
		if err != nil {
			t.Fatal(err)
		}
		if got := readExtents(t, l, e); !bytes.Equal(got, data) {
			t.Fatalf("append %d: read back differs", i)
		}
		exts = append(exts, e...)
		want = append(want, data...)
	}
	// Some chunks are flushed by now, some staged; all read back.
	if got := readExtents(t, l, exts); !bytes.Equal(got, want) {
		t.Fatal("read back before Sync differs")
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for _, e := range exts {
		got = append(got, stored(t, s, e)...)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the store differs from what was appended after Sync")
	}
	if s.direct.Load() == 0 {
		t.Fatal("no direct writes: the log did not stage")
	}
	if segs, _ := s.List(); s.allocs.Load() != int64(len(segs)) {
		t.Fatalf("%d allocations for %d segments with plenty of space; want one per segment", s.allocs.Load(), len(segs))
	}
	// A record never appended reads as corruption, staged or not.
	last := exts[len(exts)-1]
	err = l.Read(blocks.Extent{Seg: last.Seg, Index: last.Index + last.N + 3, N: 1}, make([]byte, blocks.BlockSize))
	if !errors.Is(err, blocks.ErrChecksum) {
		t.Fatalf("read of a slot never written: %v; want a checksum error", err)
	}
	// More appends after a Sync rewrite the partial page; both syncs' data stay.
	e2, err := l.Append(blocks.ClassReplicated, 4, 9999, pattern(5, 77))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Close gives back the preallocated tail of the open segment.
	le := e2[len(e2)-1]
	if f, _ := s.Open(le.Seg); f != nil {
		if sz, _ := f.Size(); sz != blocks.RecordOffset(le.Index+le.N) {
			t.Fatalf("open segment is %d bytes after Close; want %d", sz, blocks.RecordOffset(le.Index+le.N))
		}
	}
	l2, err := blocks.OpenLog(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if got := readExtents(t, l2, exts); !bytes.Equal(got, want) {
		t.Fatal("reopened log reads different data")
	}
	if got := readExtents(t, l2, e2); !bytes.Equal(got, pattern(5, 77)) {
		t.Fatal("reopened log: second sync's data differs")
	}
}

// Many goroutines append at once; every extent reads back its own data,
// before and after Sync, and from the store after Sync.
func TestConcurrentAppendsAndSync(t *testing.T) {
	s := newDirectStore(t)
	// Close to the reserve: the log preallocates chunk by chunk.
	s.free = blocks.ReserveFor(1<<40) + 200<<20
	l, err := blocks.OpenLog(s, blocks.LogConfig{Host: 3, SegmentBlocks: 3000})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const workers, rounds = 8, 30
	type put struct {
		exts []blocks.Extent
		data []byte
	}
	var mu sync.Mutex
	var puts []put
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				data := pattern(1+(w*7+r*13)%40, byte(w*31+r))
				exts, err := l.Append(blocks.ClassReplicated, uint64(w), uint64(r), data)
				if err != nil {
					errs <- err
					return
				}
				buf := readExtentsErr(l, exts)
				if !bytes.Equal(buf, data) {
					errs <- fmt.Errorf("worker %d round %d: read back differs", w, r)
					return
				}
				if r%17 == 0 {
					if err := l.Sync(); err != nil {
						errs <- err
						return
					}
					for _, e := range exts {
						if f, err := s.Open(e.Seg); err != nil {
							errs <- err
							return
						} else if sz, _ := f.Size(); sz < blocks.RecordOffset(e.Index+e.N) {
							errs <- fmt.Errorf("worker %d: synced extent %+v not in the store (size %d)", w, e, sz)
							return
						}
					}
				}
				mu.Lock()
				puts = append(puts, put{exts, data})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if segs, _ := s.List(); s.allocs.Load() <= int64(len(segs)) {
		t.Fatalf("%d allocations for %d segments near the reserve; want one per chunk", s.allocs.Load(), len(segs))
	}
	for _, p := range puts {
		var got []byte
		for _, e := range p.exts {
			got = append(got, stored(t, s, e)...)
		}
		if !bytes.Equal(got, p.data) {
			t.Fatalf("extents %+v: the store differs after Sync", p.exts)
		}
	}
}

func readExtentsErr(l *blocks.Log, exts []blocks.Extent) []byte {
	var out []byte
	for _, e := range exts {
		buf := make([]byte, int(e.N)*blocks.BlockSize)
		if err := l.Read(e, buf); err != nil {
			return nil
		}
		out = append(out, buf...)
	}
	return out
}

// A failed background flush is not lost: Sync reports it (ENOSPC as
// ErrNoSpace), appends stop, and a later Sync writes the chunk.
func TestFlushFailureSurfacesAndRecovers(t *testing.T) {
	s := newDirectStore(t)
	s.failErr = syscall.ENOSPC
	l, err := blocks.OpenLog(s, blocks.LogConfig{Host: 1, SegmentBlocks: 2048})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Append(blocks.ClassReplicated, 1, 0, pattern(1, 1)); err != nil { // writes the segment header
		t.Fatal(err)
	}
	s.fail.Store(1000)
	data := pattern(blocks.ChunkRecords, 5) // fills chunk 0: queued for a flusher
	exts, err := l.Append(blocks.ClassReplicated, 1, 1, data[:len(data)-blocks.BlockSize])
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); !errors.Is(err, blocks.ErrNoSpace) {
		t.Fatalf("sync with failing writes: %v; want ErrNoSpace", err)
	}
	// The records are still readable from memory.
	if got := readExtents(t, l, exts); !bytes.Equal(got, data[:len(data)-blocks.BlockSize]) {
		t.Fatal("staged data lost after a failed flush")
	}
	s.fail.Store(0)
	if err := l.Sync(); err != nil {
		t.Fatalf("sync after the medium recovered: %v", err)
	}
	if got := stored(t, s, exts[0]); !bytes.Equal(got, data[:len(data)-blocks.BlockSize]) {
		t.Fatal("store differs after the retried flush")
	}
	if _, err := l.Append(blocks.ClassReplicated, 1, 600, pattern(2, 9)); err != nil {
		t.Fatalf("append after recovery: %v", err)
	}
}

// fileStore is a minimal one-file-per-segment store on a real directory
// with an O_DIRECT descriptor, to check the log against the kernel's own
// alignment rules and page cache coherence.
type fileStore struct{ dir string }

type fileSeg struct {
	*os.File
	d *os.File
}

func (s fileStore) name(id blocks.SegmentID) string { return filepath.Join(s.dir, id.String()) }
func (s fileStore) Create(id blocks.SegmentID) (blocks.SegmentFile, error) {
	f, err := os.OpenFile(s.name(id), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	d, err := os.OpenFile(s.name(id), os.O_WRONLY|syscall.O_DIRECT, 0)
	if err != nil {
		f.Close()
		return nil, err
	}
	return fileSeg{f, d}, nil
}
func (s fileStore) Open(id blocks.SegmentID) (blocks.SegmentFile, error) {
	f, err := os.Open(s.name(id))
	if err != nil {
		return nil, blocks.ErrNotFound
	}
	return fileSeg{f, nil}, nil
}
func (s fileStore) Remove(id blocks.SegmentID) error           { os.Remove(s.name(id)); return nil }
func (s fileStore) List() ([]blocks.SegmentID, error)          { return nil, nil }
func (s fileStore) Space() (uint64, uint64, error)             { return 1 << 40, 1 << 39, nil }
func (f fileSeg) WriteDirect(p []byte, off int64) (int, error) { return f.d.WriteAt(p, off) }
func (f fileSeg) Allocate(off, n int64) error                  { return syscall.Fallocate(int(f.Fd()), 0, off, n) }
func (f fileSeg) Sync() error                                  { return syscall.Fdatasync(int(f.Fd())) }
func (f fileSeg) Size() (int64, error)                         { st, err := f.Stat(); return st.Size(), err }
func (f fileSeg) Close() error {
	if f.d != nil {
		f.d.Close()
	}
	return f.File.Close()
}

func TestStagedOnRealFiles(t *testing.T) {
	dir := t.TempDir()
	probe, err := os.OpenFile(filepath.Join(dir, "probe"), os.O_RDWR|os.O_CREATE|syscall.O_DIRECT, 0o600)
	if err != nil {
		t.Skipf("%s does not take O_DIRECT (%v); the staging path is covered by the in-memory direct store", dir, err)
	}
	probe.Close()
	s := fileStore{dir}
	l, err := blocks.OpenLog(s, blocks.LogConfig{Host: 1, SegmentBlocks: 1200})
	if err != nil {
		t.Fatal(err)
	}
	var exts []blocks.Extent
	var want []byte
	for i, n := range []int{3, 600, 1, 1000, 256} {
		data := pattern(n, byte(i+40))
		e, err := l.Append(blocks.ClassReplicated, 1, uint64(len(want)/blocks.BlockSize), data)
		if err != nil {
			t.Fatal(err)
		}
		exts = append(exts, e...)
		want = append(want, data...)
		if i == 2 {
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			// Read through the page cache what was just written direct.
			if got := readExtents(t, l, exts); !bytes.Equal(got, want) {
				t.Fatal("read after sync differs")
			}
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for _, e := range exts {
		got = append(got, stored(t, s, e)...)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("files differ from what was appended")
	}
	last := exts[len(exts)-1]
	if st, err := os.Stat(s.name(last.Seg)); err != nil || st.Size() != blocks.RecordOffset(last.Index+last.N) {
		t.Fatalf("open segment after Close: %v, %v; want %d bytes (preallocation trimmed)", st.Size(), err, blocks.RecordOffset(last.Index+last.N))
	}
}
