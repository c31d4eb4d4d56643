package cachessd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/vafs/vafs/blocks"
)

// Dir is a blocks.Store of one file per segment in a directory:
// DIR/<16 hex digits>.seg.
type Dir struct {
	path string
}

var (
	_ blocks.Store      = (*Dir)(nil)
	_ blocks.NameSyncer = (*Dir)(nil)
)

// OpenDir opens (creating if needed) a segment directory.
func OpenDir(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("cachessd: %w", err)
	}
	return &Dir{path: path}, nil
}

func (d *Dir) name(id blocks.SegmentID) string {
	return filepath.Join(d.path, id.String()+".seg")
}

type segFile struct{ *os.File }

func (f segFile) Sync() error { return syscall.Fdatasync(int(f.Fd())) }
func (f segFile) Size() (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// directFile is a segment being appended to: a second descriptor opened
// O_DIRECT takes the log's page-aligned chunk writes around the page cache
// (no double buffering, no dirty-page writeback throttling). Reads and
// unaligned writes use the buffered descriptor; the kernel keeps the two
// coherent (a direct write invalidates the cached pages it covers).
type directFile struct {
	segFile
	direct  *os.File
	noAlloc atomic.Bool
}

var _ blocks.DirectFile = (*directFile)(nil)

func (f *directFile) WriteDirect(p []byte, off int64) (int, error) {
	return f.direct.WriteAt(p, off)
}

// Allocate preallocates so that the log's direct writes overwrite allocated
// space: ext4 serializes direct writes that extend a file, and a write into
// allocated space cannot fail with ENOSPC.
func (f *directFile) Allocate(off, n int64) error {
	if f.noAlloc.Load() {
		return nil
	}
	for {
		err := syscall.Fallocate(int(f.Fd()), 0, off, n)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENOSYS):
			f.noAlloc.Store(true)
			return nil
		default:
			return fmt.Errorf("cachessd: fallocate: %w", err)
		}
	}
}

func (f *directFile) Close() error {
	err := f.direct.Close()
	if e := f.File.Close(); err == nil {
		err = e
	}
	return err
}

// Create makes a new segment. When the medium takes O_DIRECT the file is a
// blocks.DirectFile; where it does not (tmpfs answers EINVAL) it is a plain
// buffered file, and the log writes records through.
func (d *Dir) Create(id blocks.SegmentID) (blocks.SegmentFile, error) {
	f, err := os.OpenFile(d.name(id), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("cachessd: segment %s: %w", id, blocks.ErrExists)
	}
	if err != nil {
		return nil, fmt.Errorf("cachessd: %w", err)
	}
	// The name is made durable by SyncNames, which the log calls before
	// any commit can refer to the segment: a directory fsync here, per
	// segment, would stall the appends that roll to a new segment.
	if df, err := os.OpenFile(d.name(id), os.O_WRONLY|syscall.O_DIRECT, 0); err == nil {
		return &directFile{segFile: segFile{f}, direct: df}, nil
	}
	return segFile{f}, nil
}

// SyncNames makes the names of the segments created so far durable
// (blocks.NameSyncer): one fsync of the directory.
func (d *Dir) SyncNames() error { return syncDir(d.path) }

func (d *Dir) Open(id blocks.SegmentID) (blocks.SegmentFile, error) {
	f, err := os.OpenFile(d.name(id), os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("cachessd: segment %s: %w", id, blocks.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("cachessd: %w", err)
	}
	return segFile{f}, nil
}

func (d *Dir) Remove(id blocks.SegmentID) error {
	err := os.Remove(d.name(id))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cachessd: %w", err)
	}
	return nil
}

func (d *Dir) List() ([]blocks.SegmentID, error) {
	ents, err := os.ReadDir(d.path)
	if err != nil {
		return nil, fmt.Errorf("cachessd: %w", err)
	}
	var ids []blocks.SegmentID
	for _, e := range ents {
		hex, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok || len(hex) != 16 {
			continue
		}
		v, err := strconv.ParseUint(hex, 16, 64)
		if err != nil {
			continue
		}
		ids = append(ids, blocks.SegmentID(v))
	}
	return ids, nil
}

func (d *Dir) Space() (total, free uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.path, &st); err != nil {
		return 0, 0, fmt.Errorf("cachessd: statfs: %w", err)
	}
	return st.Blocks * uint64(st.Bsize), st.Bavail * uint64(st.Bsize), nil
}

func syncDir(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cachessd: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cachessd: sync dir: %w", err)
	}
	return nil
}
