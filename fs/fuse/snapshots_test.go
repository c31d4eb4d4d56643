package fuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	vfs "github.com/vafs/vafs/fs"
	"github.com/vafs/vafs/meta"
)

// needEngine fails the test on any error from an fs snapshot call, and says
// so plainly when the engine does not implement it (ErrNotSupported): a stub
// engine is a missing feature, not a reason to skip.
func needEngine(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, vfs.ErrNotSupported) {
		t.Fatalf("the fs snapshot engine does not implement this (%v): this test needs it", err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func inoOf(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// pattern is n bytes that differ per seed and per block.
func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i/4096) + byte(i%251)
	}
	return p
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func wantErrno(t *testing.T, what string, err error, want ...syscall.Errno) {
	t.Helper()
	for _, w := range want {
		if errors.Is(err, w) {
			return
		}
	}
	t.Errorf("%s: got %v, want %v", what, err, want)
}

// TestSnapshotsDir checks the parts of .snapshots that need no snapshot:
// hidden from the root's listing, looked up all the same, mirroring
// directories and files but not symlinks, read-only, and its name
// reserved in the root.
func TestSnapshotsDir(t *testing.T) {
	mnt, f := mountFS(t, Options{})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(mnt, "d"), 0o750))
	must(os.WriteFile(filepath.Join(mnt, "d", "a.raw"), []byte("x"), 0o640))
	must(os.Symlink("a.raw", filepath.Join(mnt, "d", "l")))
	must(os.Mkdir(filepath.Join(mnt, "e"), 0o755))
	snaps := filepath.Join(mnt, SnapshotsDir)

	if n := names(t, mnt); slices.Contains(n, SnapshotsDir) {
		t.Errorf("root lists %v, want no %s", n, SnapshotsDir)
	}
	st, err := os.Stat(snaps)
	must(err)
	if !st.IsDir() || st.Mode().Perm()&0o222 != 0 {
		t.Errorf("%s: mode %v, want a directory without write bits", snaps, st.Mode())
	}
	if got := names(t, snaps); !slices.Equal(got, []string{"d", "e"}) {
		t.Errorf(".snapshots lists %v, want [d e]", got)
	}
	if got := names(t, filepath.Join(snaps, "d")); !slices.Equal(got, []string{"a.raw"}) {
		t.Errorf(".snapshots/d lists %v, want [a.raw] (no symlink)", got)
	}
	st, err = os.Stat(filepath.Join(snaps, "d", "a.raw"))
	must(err)
	if !st.IsDir() || st.Mode().Perm() != 0o550 {
		t.Errorf(".snapshots/d/a.raw: mode %v, want dr-xr-x--- (the file's read bits, searchable)", st.Mode())
	}
	st, err = os.Stat(filepath.Join(snaps, "d"))
	must(err)
	if !st.IsDir() || st.Mode().Perm() != 0o550 {
		t.Errorf(".snapshots/d: mode %v, want dr-xr-x--- (0750 without write)", st.Mode())
	}
	if _, err := os.Lstat(filepath.Join(snaps, "d", "l")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("symlink mirrored: %v, want ENOENT", err)
	}
	if ino := inoOf(t, snaps); ino != snapRoot {
		t.Errorf(".snapshots ino %#x, want %#x", ino, uint64(snapRoot))
	}

	// Every change under .snapshots is EROFS.
	wantErrno(t, "mkdir under .snapshots", os.Mkdir(filepath.Join(snaps, "x"), 0o755), syscall.EROFS)
	_, err = os.Create(filepath.Join(snaps, "d", "new"))
	wantErrno(t, "create under .snapshots", err, syscall.EROFS)
	wantErrno(t, "mknod under .snapshots", syscall.Mknod(filepath.Join(snaps, "fifo"), syscall.S_IFIFO|0o644, 0), syscall.EROFS)
	wantErrno(t, "symlink under .snapshots", os.Symlink("x", filepath.Join(snaps, "s")), syscall.EROFS)
	wantErrno(t, "link into .snapshots", os.Link(filepath.Join(mnt, "d", "a.raw"), filepath.Join(snaps, "d", "b")), syscall.EROFS)
	wantErrno(t, "rmdir under .snapshots", syscall.Rmdir(filepath.Join(snaps, "e")), syscall.EROFS)
	wantErrno(t, "rmdir .snapshots", syscall.Rmdir(snaps), syscall.EROFS)
	wantErrno(t, "rename out of .snapshots", os.Rename(filepath.Join(snaps, "e"), filepath.Join(mnt, "e2")), syscall.EROFS)
	wantErrno(t, "rename into .snapshots", os.Rename(filepath.Join(mnt, "e"), filepath.Join(snaps, "e2")), syscall.EROFS)
	wantErrno(t, "rename .snapshots", os.Rename(snaps, filepath.Join(mnt, "s2")), syscall.EROFS)
	wantErrno(t, "chmod .snapshots", os.Chmod(snaps, 0o777), syscall.EROFS)
	wantErrno(t, "chmod under .snapshots", os.Chmod(filepath.Join(snaps, "d"), 0o777), syscall.EROFS)
	wantErrno(t, "setxattr under .snapshots", syscall.Setxattr(filepath.Join(snaps, "d"), "user.x", []byte("1"), 0), syscall.EROFS)
	wantErrno(t, "removexattr under .snapshots", syscall.Removexattr(filepath.Join(snaps, "d"), "user.x"), syscall.EROFS)
	if _, err := syscall.Getxattr(filepath.Join(snaps, "d"), "user.x", nil); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("getxattr under .snapshots: %v, want ENODATA", err)
	}

	// No real entry can take the name: the kernel answers EEXIST where it
	// sees the virtual directory, vafs EPERM where the request reaches it.
	wantErrno(t, "mkdir .snapshots", os.Mkdir(snaps, 0o755), syscall.EEXIST, syscall.EPERM)
	// (syscall.Rename: os.Rename answers EEXIST itself for a directory.)
	wantErrno(t, "rename a directory onto .snapshots", syscall.Rename(filepath.Join(mnt, "e"), snaps), syscall.EPERM)
	wantErrno(t, "link onto .snapshots", os.Link(filepath.Join(mnt, "d", "a.raw"), snaps), syscall.EEXIST, syscall.EPERM)
	if _, err := f.Lookup(meta.RootIno, SnapshotsDir); !errors.Is(err, vfs.ErrNotFound) {
		t.Errorf("a real %s was made in the root: %v", SnapshotsDir, err)
	}
	// The real tree is untouched.
	if got := names(t, mnt); !slices.Equal(got, []string{"d", "e"}) {
		t.Errorf("root lists %v, want [d e]", got)
	}
}

// TestSnapshotFiles reads a snapshot through the mount and checks that it
// is read-only.
func TestSnapshotFiles(t *testing.T) {
	mnt, f := mountFS(t, Options{})
	if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(mnt, "d", "a.raw")
	v1 := pattern(1<<20+100, 1)
	if err := os.WriteFile(file, v1, 0o640); err != nil {
		t.Fatal(err)
	}
	ino := inoOf(t, file)
	s, err := f.SnapshotCreate(ino, "s1")
	needEngine(t, err)
	v2 := pattern(300<<10, 7)
	if err := os.WriteFile(file, v2, 0o640); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(mnt, SnapshotsDir, "d", "a.raw")
	if got := names(t, dir); !slices.Equal(got, []string{"s1"}) {
		t.Fatalf("%s lists %v, want [s1]", dir, got)
	}
	snap := filepath.Join(dir, "s1")
	var st syscall.Stat_t
	if err := syscall.Stat(snap, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != syscall.S_IFREG|0o444 || st.Size != int64(len(v1)) || st.Ino != snapBit|s.ID || st.Mtim.Sec != s.Created.Unix() {
		t.Errorf("snapshot stat: mode %o size %d ino %#x mtime %d; want %o %d %#x %d",
			st.Mode, st.Size, st.Ino, st.Mtim.Sec, syscall.S_IFREG|0o444, len(v1), snapBit|s.ID, s.Created.Unix())
	}
	if st.Blocks == 0 {
		t.Errorf("snapshot stat: 0 blocks for %d written bytes", len(v1))
	}
	got, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, v1) {
		t.Errorf("snapshot reads %d bytes, not what was written before it", len(got))
	}
	if got, _ := os.ReadFile(file); !bytes.Equal(got, v2) {
		t.Errorf("file reads %d bytes, not its current content", len(got))
	}

	_, err = os.OpenFile(snap, os.O_WRONLY, 0)
	wantErrno(t, "open snapshot for writing", err, syscall.EROFS)
	_, err = os.OpenFile(snap, os.O_RDWR, 0)
	wantErrno(t, "open snapshot read-write", err, syscall.EROFS)
	wantErrno(t, "truncate snapshot", os.Truncate(snap, 0), syscall.EROFS)
	wantErrno(t, "unlink snapshot", os.Remove(snap), syscall.EROFS)
	wantErrno(t, "chmod snapshot", os.Chmod(snap, 0o644), syscall.EROFS)
	wantErrno(t, "chown snapshot", os.Chown(snap, 1, 1), syscall.EROFS)
	wantErrno(t, "utimes snapshot", os.Chtimes(snap, time.Now(), time.Now()), syscall.EROFS)
	wantErrno(t, "setxattr snapshot", syscall.Setxattr(snap, "user.x", []byte("1"), 0), syscall.EROFS)
	wantErrno(t, "rename snapshot", os.Rename(snap, filepath.Join(mnt, "d", "b")), syscall.EROFS)
	wantErrno(t, "rename onto snapshot", os.Rename(file, snap), syscall.EROFS)
	wantErrno(t, "link snapshot", os.Link(snap, filepath.Join(mnt, "d", "b")), syscall.EROFS)
	wantErrno(t, "create in a file's snapshot dir", os.WriteFile(filepath.Join(dir, "s2"), nil, 0o644), syscall.EROFS)
	if got, _ := os.ReadFile(snap); !bytes.Equal(got, v1) {
		t.Errorf("snapshot changed after refused changes")
	}

	// SEEK_DATA/SEEK_HOLE answer on a snapshot, and still work on real
	// files afterwards (an ENOSYS would turn lseek off mount-wide).
	sf, err := os.Open(snap)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	if off, err := sf.Seek(4096, 3 /* SEEK_DATA */); err != nil || off != 4096 {
		t.Errorf("SEEK_DATA on snapshot: %d, %v", off, err)
	}
	if off, err := sf.Seek(0, 4 /* SEEK_HOLE */); err != nil || off != int64(len(v1)) {
		t.Errorf("SEEK_HOLE on snapshot: %d, %v", off, err)
	}
	sparse := filepath.Join(mnt, "sparse")
	sp, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if _, err := sp.WriteAt([]byte("data"), 1<<20); err != nil {
		t.Fatal(err)
	}
	if off, err := sp.Seek(0, 3 /* SEEK_DATA */); err != nil || off != 1<<20 {
		t.Errorf("SEEK_DATA on a real sparse file after snapshot seeks: %d, %v (want %d)", off, err, 1<<20)
	}
}

// TestRollbackInvalidates: after a rollback, a reader that has the file's
// new content in the page cache (and its size in the attribute cache)
// sees the snapshot's at once.
func TestRollbackInvalidates(t *testing.T) {
	mnt, f := mountFS(t, Options{})
	file := filepath.Join(mnt, "a.raw")
	v1 := pattern(64<<10, 3)
	if err := os.WriteFile(file, v1, 0o644); err != nil {
		t.Fatal(err)
	}
	ino := inoOf(t, file)
	_, err := f.SnapshotCreate(ino, "s1")
	needEngine(t, err)
	v2 := pattern(192<<10, 9)
	if err := os.WriteFile(file, v2, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := os.Open(file) // buffered: reads go through the page cache
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, _ := io.ReadAll(io.NewSectionReader(r, 0, 1<<20)); !bytes.Equal(got, v2) {
		t.Fatalf("before rollback the reader sees %d bytes, not the file", len(got))
	}
	if err := f.SnapshotRollback(ino, "s1", false); err != nil {
		t.Fatalf("rollback with only a reader open: %v", err)
	}
	// Read first, within the old size and before any stat: a stat would
	// fetch attributes, and the kernel drops pages itself when it sees
	// the size or mtime change (AUTO_INVAL_DATA). This read shows whether
	// the rollback itself dropped them.
	got := make([]byte, len(v1))
	if n, err := r.ReadAt(got, 0); n != len(v1) || !bytes.Equal(got, v1) {
		t.Errorf("after rollback the reader sees other content than the snapshot's (%d bytes, %v): stale page cache", n, err)
	}
	fi, err := r.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != int64(len(v1)) {
		t.Errorf("after rollback fstat says %d bytes, want the snapshot's %d", fi.Size(), len(v1))
	}
	if got, _ := io.ReadAll(io.NewSectionReader(r, 0, 1<<20)); !bytes.Equal(got, v1) {
		t.Errorf("after rollback the reader reads %d bytes to EOF, want the snapshot's %d", len(got), len(v1))
	}
	if got, _ := os.ReadFile(file); !bytes.Equal(got, v1) {
		t.Errorf("after rollback a new open reads %d bytes, not the snapshot's content", len(got))
	}

	// A file open for writing is refused unless forced.
	w, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := f.SnapshotRollback(ino, "s1", false); !errors.Is(err, vfs.ErrBusy) {
		t.Errorf("rollback of a file open for writing: %v, want ErrBusy", err)
	}
}

func TestErrnoBusy(t *testing.T) {
	err := fmt.Errorf("rollback vms/a.raw: %w", vfs.ErrBusy)
	if st := toErrno(log.New(io.Discard, "", 0), "rollback", err); st != gofuse.Status(syscall.EBUSY) {
		t.Errorf("ErrBusy maps to %v, want EBUSY", st)
	}
}

// syncBuffer is a log sink the FUSE server goroutines write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func copyFileRange(in, out *os.File, n int) (int, error) {
	r, _, e := syscall.Syscall6(uintptr(sysCopyFileRange), in.Fd(), 0, out.Fd(), 0, uintptr(n), 0)
	if e != 0 {
		return int(r), e
	}
	return int(r), nil
}

// TestCopyFromSnapshot: copy_file_range from a snapshot is answered
// EOPNOTSUPP (so the kernel copies it itself) and not ENOSYS (which would
// turn copy_file_range off for the whole mount); cp copies a snapshot.
func TestCopyFromSnapshot(t *testing.T) {
	if sysCopyFileRange < 0 {
		t.Skip("copy_file_range syscall number unknown on this architecture")
	}
	dbg := &syncBuffer{}
	mnt, f := mountFS(t, Options{Debug: true, Logger: log.New(dbg, "", 0)})
	file := filepath.Join(mnt, "a.raw")
	v1 := pattern(256<<10, 5)
	if err := os.WriteFile(file, v1, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := f.SnapshotCreate(inoOf(t, file), "s1")
	needEngine(t, err)
	snap := filepath.Join(mnt, SnapshotsDir, "a.raw", "s1")

	src, err := os.Open(snap)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(filepath.Join(mnt, "c1"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	n, err := copyFileRange(src, dst, len(v1))
	switch {
	case errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EXDEV):
		// An older kernel hands the refusal to the caller, who copies.
	case err != nil:
		t.Fatalf("copy_file_range from a snapshot: %v", err)
	default:
		// The kernel fell back to copying: the data must be right.
		if n != len(v1) {
			t.Errorf("copy_file_range from a snapshot copied %d of %d bytes", n, len(v1))
		}
		if got, _ := os.ReadFile(dst.Name()); !bytes.Equal(got, v1[:n]) {
			t.Errorf("copy_file_range from a snapshot wrote wrong data")
		}
	}
	if !strings.Contains(dbg.String(), "COPY_FILE_RANGE") {
		t.Fatalf("no COPY_FILE_RANGE request reached the server (debug log has %d bytes)", len(dbg.String()))
	}
	before := strings.Count(dbg.String(), "COPY_FILE_RANGE")

	// A copy between real files still reaches the server.
	in, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(mnt, "c2"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if n, err := copyFileRange(in, out, len(v1)); err != nil || n != len(v1) {
		t.Fatalf("copy_file_range between files: %d, %v", n, err)
	}
	if after := strings.Count(dbg.String(), "COPY_FILE_RANGE"); after <= before {
		t.Errorf("copy_file_range between files did not reach the server: the snapshot's answer turned it off")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c3 := filepath.Join(mnt, "c3")
	if out, err := exec.CommandContext(ctx, "cp", snap, c3).CombinedOutput(); err != nil {
		t.Fatalf("cp %s: %v: %s", snap, err, out)
	}
	if got, _ := os.ReadFile(c3); !bytes.Equal(got, v1) {
		t.Errorf("cp of a snapshot: %d bytes, not the snapshot's content", len(got))
	}
}
