package blocks_test

import (
	"errors"
	"sync"
	"syscall"
	"testing"

	"github.com/vafs/vafs/blocks"
)

// nameStore is a NameSyncer: a created segment's name is durable only after
// SyncNames, and a segment file's Sync before that is an error (a commit
// could then refer to a segment a crash loses).
type nameStore struct {
	*directStore
	mu      sync.Mutex
	pending map[blocks.SegmentID]bool
	calls   int
	fail    error
}

type nameFile struct {
	*directMemFile
	s  *nameStore
	id blocks.SegmentID
}

func (s *nameStore) Create(id blocks.SegmentID) (blocks.SegmentFile, error) {
	f, err := s.directStore.Create(id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.pending[id] = true
	s.mu.Unlock()
	return nameFile{f.(*directMemFile), s, id}, nil
}

func (s *nameStore) SyncNames() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.calls++
	clear(s.pending)
	return nil
}

func (f nameFile) Sync() error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if f.s.pending[f.id] {
		f.s.t.Errorf("segment %v synced before its name", f.id)
	}
	return nil
}

func (s *nameStore) syncNamesCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

var _ blocks.NameSyncer = (*nameStore)(nil)

// Sync makes the names of new segments durable before it syncs their files,
// once per Sync that follows new segments and not otherwise.
func TestSyncMakesNewSegmentNamesDurable(t *testing.T) {
	s := &nameStore{directStore: newDirectStore(t), pending: map[blocks.SegmentID]bool{}}
	l, err := blocks.OpenLog(s, blocks.LogConfig{Host: 1, SegmentBlocks: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Append(blocks.ClassReplicated, 1, 0, pattern(10, 1)); err != nil { // three segments
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := s.syncNamesCalls(); n != 1 {
		t.Fatalf("SyncNames called %d times for one Sync; want 1", n)
	}
	if _, err := l.Append(blocks.ClassReplicated, 1, 10, pattern(1, 2)); err != nil { // same segment
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := s.syncNamesCalls(); n != 1 {
		t.Fatalf("SyncNames called again (%d) with no new segment", n)
	}
	if _, err := l.Append(blocks.ClassReplicated, 1, 11, pattern(2, 3)); err != nil { // rolls
		t.Fatal(err)
	}
	s.mu.Lock()
	s.fail = syscall.EIO
	s.mu.Unlock()
	if err := l.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("sync with failing SyncNames: %v; want EIO", err)
	}
	s.mu.Lock()
	s.fail = nil
	s.mu.Unlock()
	// A failed directory sync is not retried: the names it covered may be
	// lost while a retry succeeds. Every later Sync and Append fails.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Sync(); !errors.Is(err, blocks.ErrSyncFailed) || !errors.Is(err, syscall.EIO) {
				t.Errorf("sync after a failed SyncNames: %v; want ErrSyncFailed wrapping EIO", err)
			}
		}()
	}
	wg.Wait()
	if _, err := l.Append(blocks.ClassReplicated, 1, 13, pattern(1, 4)); !errors.Is(err, blocks.ErrSyncFailed) {
		t.Fatalf("append after a failed sync: %v; want ErrSyncFailed", err)
	}
	if n := s.syncNamesCalls(); n != 1 {
		t.Fatalf("SyncNames called %d times in all; want 1 (a failed one is never retried)", n)
	}
}
