package blocks_test

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vafs/vafs/blocks"
)

// TestTransientFlushErrorCostsNothing: one failed background chunk write
// is retried from memory by the next append; nothing is lost and the next
// Sync succeeds. Before, the error stuck: every append (so every commit,
// which flushes the write-back cache before it syncs) failed forever.
func TestTransientFlushErrorCostsNothing(t *testing.T) {
	s := newDirectStore(t)
	l, err := blocks.OpenLog(s, blocks.LogConfig{Host: 1, SegmentBlocks: 2048})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s.fail.Store(1) // the flusher's write of chunk 0 fails once
	first := pattern(blocks.ChunkRecords, 5)
	exts, err := l.Append(blocks.ClassReplicated, 1, 0, first)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.fail.Load() > 0 && time.Now().Before(deadline) { // wait for the failed flush
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond)
	more, err := l.Append(blocks.ClassReplicated, 1, blocks.ChunkRecords, pattern(3, 7))
	if err != nil {
		t.Fatalf("append after one transient write error: %v", err)
	}
	if err := l.Sync(); err != nil {
		t.Fatalf("sync after one transient write error: %v", err)
	}
	if got := stored(t, s, exts[0]); !bytes.Equal(got, first) {
		t.Fatal("the chunk whose write failed is not in the store after the retry")
	}
	if got := stored(t, s, more[0]); !bytes.Equal(got, pattern(3, 7)) {
		t.Fatal("later records not in the store")
	}
}

// TestFailedSyncIsNeverTrusted: after a failed fdatasync the Log refuses
// every later Sync and Append, naming the segment. Before, the segment was
// queued again and the next fdatasync (which Linux answers 0 once it has
// reported the error) let a commit refer to records that may be lost.
func TestFailedSyncIsNeverTrusted(t *testing.T) {
	s := newDirectStore(t)
	l, err := blocks.OpenLog(s, blocks.LogConfig{Host: 1, SegmentBlocks: 2048})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	exts, err := l.Append(blocks.ClassReplicated, 1, 0, pattern(4, 1))
	if err != nil {
		t.Fatal(err)
	}
	s.failSync.Store(1)
	err = l.Sync()
	if !errors.Is(err, blocks.ErrSyncFailed) || !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), exts[0].Seg.String()) {
		t.Fatalf("failed sync: %v; want ErrSyncFailed wrapping EIO naming segment %s", err, exts[0].Seg)
	}
	if err := l.Sync(); !errors.Is(err, blocks.ErrSyncFailed) {
		t.Fatalf("the sync after a failed one: %v; want ErrSyncFailed", err)
	}
	if _, err := l.Append(blocks.ClassReplicated, 1, 4, pattern(1, 2)); !errors.Is(err, blocks.ErrSyncFailed) {
		t.Fatalf("append after a failed sync: %v; want ErrSyncFailed", err)
	}
	if l.Broken() == nil {
		t.Fatal("Broken() is nil after a failed sync")
	}
	// Reads still work (the records are readable; they are just not known durable).
	buf := make([]byte, 4*blocks.BlockSize)
	if err := l.Read(exts[0], buf); err != nil || !bytes.Equal(buf, pattern(4, 1)) {
		t.Fatalf("read after a failed sync: %v", err)
	}
}

// TestConcurrentSyncWaitsForDurability: a Sync called while another is in
// its fdatasync must not return before that data is durable. Before, the
// second caller found nothing left to sync and returned at once.
func TestConcurrentSyncWaitsForDurability(t *testing.T) {
	for _, direct := range []bool{true, false} {
		var store blocks.Store
		ds := newDirectStore(t)
		gate := make(chan chan struct{})
		ds.syncGate = gate
		store = ds
		if !direct {
			store = plainStore{ds}
		}
		l, err := blocks.OpenLog(store, blocks.LogConfig{Host: 1, SegmentBlocks: 2048})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Append(blocks.ClassReplicated, 1, 0, pattern(2, 1)); err != nil {
			t.Fatal(err)
		}
		first := make(chan error, 1)
		go func() { first <- l.Sync() }()
		release := <-gate // the first Sync is inside fdatasync
		second := make(chan error, 1)
		go func() { second <- l.Sync() }()
		select {
		case err := <-second:
			t.Fatalf("direct=%v: second Sync returned (%v) while the first's fdatasync had not completed", direct, err)
		case <-time.After(100 * time.Millisecond):
		}
		close(release)
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-gate: // the second did its own sync: let it through
			close(r)
		case <-time.After(50 * time.Millisecond):
		}
		if err := <-second; err != nil {
			t.Fatal(err)
		}
		ds.syncGate = nil
		l.Close()
	}
}

// plainStore hides DirectFile: the write-through path.
type plainStore struct{ *directStore }

func (s plainStore) Create(id blocks.SegmentID) (blocks.SegmentFile, error) {
	f, err := s.directStore.Create(id)
	return plainFile{f}, err
}

func (s plainStore) Open(id blocks.SegmentID) (blocks.SegmentFile, error) {
	f, err := s.directStore.Open(id)
	if err != nil {
		return nil, err
	}
	return plainFile{f}, nil
}

type plainFile struct{ blocks.SegmentFile }

// countingStore counts the segment files open at once.
type countingStore struct {
	*blocks.MemStore
	mu        sync.Mutex
	open, max int
}

type countedFile struct {
	blocks.SegmentFile
	s    *countingStore
	once sync.Once
}

func (s *countingStore) Open(id blocks.SegmentID) (blocks.SegmentFile, error) {
	f, err := s.MemStore.Open(id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.open++
	s.max = max(s.max, s.open)
	s.mu.Unlock()
	return &countedFile{SegmentFile: f, s: s}, nil
}

func (f *countedFile) Close() error {
	f.once.Do(func() {
		f.s.mu.Lock()
		f.s.open--
		f.s.mu.Unlock()
	})
	return nil
}

// TestReadersAreBounded: reading every one of many segments keeps at most
// MaxOpenReaders (default 512) open. Before, one descriptor per segment
// ever read stayed open until unmount: past ~20,000 segments reads failed
// with EMFILE.
func TestReadersAreBounded(t *testing.T) {
	s := &countingStore{MemStore: blocks.NewMemStore()}
	l, err := blocks.OpenLog(s, blocks.LogConfig{Host: 1, SegmentBlocks: 1})
	if err != nil {
		t.Fatal(err)
	}
	const nseg = 700
	want := pattern(nseg, 3)
	exts, err := l.Append(blocks.ClassReplicated, 1, 0, want)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, blocks.BlockSize)
			for round := range 2 {
				for i := w; i < len(exts); i += 4 {
					j := i
					if round == 1 {
						j = len(exts) - 1 - i
					}
					if err := l.Read(exts[j], buf); err != nil {
						t.Error(err)
						return
					}
					if !bytes.Equal(buf, want[j*blocks.BlockSize:(j+1)*blocks.BlockSize]) {
						t.Errorf("segment %d reads wrong data", j)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	s.mu.Lock()
	peak, open := s.max, s.open
	s.mu.Unlock()
	if peak > 512+4 {
		t.Fatalf("%d segment files open at once after reading %d segments; want at most 512 (+ readers in flight)", peak, nseg)
	}
	l.Close()
	s.mu.Lock()
	open = s.open
	s.mu.Unlock()
	if open != 0 {
		t.Fatalf("%d segment files still open after Close", open)
	}
}

// gatedStore blocks Create while gate is set, as a slow segment create
// (a directory entry on a busy disk) would.
type gatedStore struct {
	*directStore
	gate chan struct{}
	in   chan struct{}
}

func (s *gatedStore) Create(id blocks.SegmentID) (blocks.SegmentFile, error) {
	if s.gate != nil {
		select {
		case s.in <- struct{}{}:
		default:
		}
		<-s.gate
	}
	return s.directStore.Create(id)
}

// TestReadsDoNotWaitForRoll: a read of a sealed, synced segment does not
// wait for an append that is rolling to a new segment. Before, every read
// took the log's lock, which a roll holds across the segment's create,
// header write and preallocation.
func TestReadsDoNotWaitForRoll(t *testing.T) {
	s := &gatedStore{directStore: newDirectStore(t)}
	l, err := blocks.OpenLog(s, blocks.LogConfig{Host: 1, SegmentBlocks: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	exts, err := l.Append(blocks.ClassReplicated, 1, 0, pattern(8, 3)) // segment 1 (sealed) and 2 (full)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil { // segment 1 is synced and closed
		t.Fatal(err)
	}
	s.gate, s.in = make(chan struct{}), make(chan struct{}, 1)
	appended := make(chan error, 1)
	go func() { _, err := l.Append(blocks.ClassReplicated, 1, 8, pattern(1, 4)); appended <- err }() // rolls to segment 3: Create blocks
	<-s.in
	read := make(chan error, 1)
	go func() {
		buf := make([]byte, 4*blocks.BlockSize)
		err := l.Read(exts[0], buf)
		if err == nil && !bytes.Equal(buf, pattern(8, 3)[:4*blocks.BlockSize]) {
			t.Error("read back differs")
		}
		read <- err
	}()
	select {
	case err := <-read:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		close(s.gate)
		t.Fatal("a read of a sealed segment waited for a segment roll")
	}
	close(s.gate)
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
}
