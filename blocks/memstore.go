package blocks

import (
	"io"
	"sync"
)

func isEOF(err error) bool { return err == io.EOF || err == io.ErrUnexpectedEOF }

// MemStore is a Store in memory, for tests of the layers above. It passes the
// same conformance suite as the real stores.
type MemStore struct {
	mu       sync.Mutex
	segs     map[SegmentID]*memFile
	Capacity uint64 // reported by Space; 0 means 1 TiB
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return &MemStore{segs: map[SegmentID]*memFile{}} }

type memFile struct {
	mu   sync.RWMutex
	data []byte
}

func (s *MemStore) Create(id SegmentID) (SegmentFile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.segs[id] != nil {
		return nil, ErrExists
	}
	f := &memFile{}
	s.segs[id] = f
	return f, nil
}

func (s *MemStore) Open(id SegmentID) (SegmentFile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.segs[id]
	if f == nil {
		return nil, ErrNotFound
	}
	return f, nil
}

func (s *MemStore) Remove(id SegmentID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.segs, id)
	return nil
}

func (s *MemStore) List() ([]SegmentID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]SegmentID, 0, len(s.segs))
	for id := range s.segs {
		ids = append(ids, id)
	}
	return ids, nil
}

func (s *MemStore) Space() (uint64, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.Capacity
	if c == 0 {
		c = 1 << 40
	}
	var used uint64
	for _, f := range s.segs {
		f.mu.RLock()
		used += uint64(len(f.data))
		f.mu.RUnlock()
	}
	if used > c {
		return c, 0, nil
	}
	return c, c - used, nil
}

// Corrupt flips one byte of a segment, for tests of checksum handling.
func (s *MemStore) Corrupt(id SegmentID, off int64) {
	s.mu.Lock()
	f := s.segs[id]
	s.mu.Unlock()
	f.mu.Lock()
	f.data[off] ^= 0xff
	f.mu.Unlock()
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
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

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(f.data)) {
		f.data = append(f.data, make([]byte, end-int64(len(f.data)))...)
	}
	return copy(f.data[off:], p), nil
}

func (f *memFile) Sync() error { return nil }
func (f *memFile) Size() (int64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return int64(len(f.data)), nil
}
func (f *memFile) Close() error { return nil }
