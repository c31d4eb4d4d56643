package control

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vafs/vafs/fs"
	"github.com/vafs/vafs/fs/control/wire"
	"github.com/vafs/vafs/meta"
)

// fixture is a real fs.FS with vms/a.raw, served on a temp socket.
type fixture struct {
	t   *testing.T
	f   *fs.FS
	cl  *wire.Client
	vms uint64
	a   uint64
}

func newFixture(t *testing.T) *fixture {
	f := openFS(t)
	_, dir := start(t, f)
	cl, err := wire.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	vms, err := f.Mkdir(meta.RootIno, "vms", 0o755, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, err := f.Create(vms.Ino, "a.raw", 0o644, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, f: f, cl: cl, vms: vms.Ino, a: a.Ino}
}

func (x *fixture) write(ino uint64, p []byte, off int64) {
	x.t.Helper()
	if _, err := x.f.WriteAt(ino, p, off); err != nil {
		x.t.Fatal(err)
	}
}

func (x *fixture) read(ino uint64, n int) []byte {
	x.t.Helper()
	b := make([]byte, n+4096) // past the end: the size must match too
	k, err := x.f.ReadAt(ino, b, 0)
	if err != nil && k == 0 && n > 0 {
		x.t.Fatal(err)
	}
	return b[:k]
}

func (x *fixture) lookup(path string) uint64 {
	x.t.Helper()
	ino, err := x.f.Resolve(path)
	if err != nil {
		x.t.Fatalf("%s: %v", path, err)
	}
	return ino
}

func wantKind(t *testing.T, what string, err error, kind string, target error) {
	t.Helper()
	var e *wire.Error
	if !errors.As(err, &e) || e.Kind != kind {
		t.Fatalf("%s: got %v, want a %s error", what, err, kind)
	}
	if target != nil && !errors.Is(AsFS(err), target) {
		t.Fatalf("%s: %v is not %v", what, err, target)
	}
}

func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func TestSnapshotRoundTrip(t *testing.T) {
	x := newFixture(t)
	v1 := pattern(1, 3*fs.BlockSize+100)
	x.write(x.a, v1, 0)

	before := time.Now().Add(-time.Minute)
	s1, err := x.cl.SnapshotCreate("vms/a.raw", "s1")
	if err != nil {
		t.Fatal(err)
	}
	if s1.Name != "s1" || s1.Vol != x.a || s1.Size != uint64(len(v1)) || s1.CreatedTime().Before(before) || s1.ID == 0 {
		t.Fatalf("created %+v", s1)
	}
	_, err = x.cl.SnapshotCreate("./vms//a.raw", "s1")
	wantKind(t, "second s1", err, wire.KindExists, fs.ErrExists)
	if err.Error() != "snapshot exists" {
		t.Fatalf("message %q, want %q (docs/cli-snapshots.md)", err, "snapshot exists")
	}
	for _, bad := range []string{"", ".", "..", "a/b", strings.Repeat("n", 256)} {
		_, err = x.cl.SnapshotCreate("vms/a.raw", bad)
		wantKind(t, "snapshot name "+bad, err, wire.KindInvalid, nil)
		if !strings.Contains(err.Error(), "invalid snapshot name") {
			t.Fatalf("message %q", err)
		}
	}
	_, err = x.cl.SnapshotCreate("vms", "s1")
	wantKind(t, "snapshot of a directory", err, wire.KindIsDir, fs.ErrIsDir)
	if _, err := x.f.Symlink(x.vms, "link", "a.raw", 0, 0); err != nil {
		t.Fatal(err)
	}
	_, err = x.cl.SnapshotCreate("vms/link", "s1")
	wantKind(t, "snapshot of a symlink", err, wire.KindInvalid, fs.ErrInvalid)
	if err.Error() != "not a regular file" {
		t.Fatalf("message %q", err)
	}
	_, err = x.cl.SnapshotCreate("vms/missing.raw", "s1")
	wantKind(t, "snapshot of a missing file", err, wire.KindNotFound, fs.ErrNotFound)

	v2 := pattern(2, 5*fs.BlockSize)
	x.write(x.a, v2, 0)
	s2, err := x.cl.SnapshotCreate("vms/a.raw", "s2")
	if err != nil {
		t.Fatal(err)
	}
	list, err := x.cl.Snapshots("vms/a.raw")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "s1" || list[1].Name != "s2" || list[0].ID != s1.ID || list[1].ID != s2.ID ||
		list[0].Size != uint64(len(v1)) || list[1].Size != uint64(len(v2)) || list[0].Blocks == 0 {
		t.Fatalf("list %+v", list)
	}
	if list[0].Created != s1.Created {
		t.Fatalf("created %v round-tripped as %v", s1.CreatedTime(), list[0].CreatedTime())
	}

	// Rollback to s1: content and size come back; the snapshot stays.
	if err := x.cl.SnapshotRollback("vms/a.raw", "s1", false); err != nil {
		t.Fatal(err)
	}
	if got := x.read(x.a, len(v1)); !bytes.Equal(got, v1) {
		t.Fatalf("after rollback: %d bytes, not s1's %d", len(got), len(v1))
	}
	err = x.cl.SnapshotRollback("vms/a.raw", "nope", false)
	wantKind(t, "rollback to a missing snapshot", err, wire.KindNotFound, fs.ErrNotFound)

	// A writer refuses rollback unless forced.
	if _, err := x.f.Open(x.a, true); err != nil {
		t.Fatal(err)
	}
	err = x.cl.SnapshotRollback("vms/a.raw", "s2", false)
	wantKind(t, "rollback of an open file", err, wire.KindBusy, fs.ErrBusy)
	if err.Error() != "file is open for writing" {
		t.Fatalf("message %q", err)
	}
	if got := x.read(x.a, len(v1)); !bytes.Equal(got, v1) {
		t.Fatal("a refused rollback changed the file")
	}
	if err := x.cl.SnapshotRollback("vms/a.raw", "s2", true); err != nil {
		t.Fatal(err)
	}
	if err := x.f.Release(x.a, true); err != nil {
		t.Fatal(err)
	}
	if got := x.read(x.a, len(v2)); !bytes.Equal(got, v2) {
		t.Fatal("forced rollback to s2 did not take")
	}

	// Delete.
	if err := x.cl.SnapshotDelete("vms/a.raw", "s1"); err != nil {
		t.Fatal(err)
	}
	err = x.cl.SnapshotDelete("vms/a.raw", "s1")
	wantKind(t, "second delete", err, wire.KindNotFound, fs.ErrNotFound)
	if err.Error() != "no such snapshot" {
		t.Fatalf("message %q", err)
	}
	list, err = x.cl.Snapshots("vms/a.raw")
	if err != nil || len(list) != 1 || list[0].Name != "s2" {
		t.Fatalf("after delete: %+v, %v", list, err)
	}
	if err := x.cl.SnapshotDelete("vms/a.raw", "s2"); err != nil {
		t.Fatal(err)
	}
	list, err = x.cl.Snapshots("vms/a.raw")
	if err != nil || len(list) != 0 {
		t.Fatalf("after deleting all: %+v, %v", list, err)
	}
}

func TestCloneRoundTrip(t *testing.T) {
	x := newFixture(t)
	v1 := pattern(3, 2*fs.BlockSize+7)
	x.write(x.a, v1, 0)
	if _, err := x.cl.SnapshotCreate("vms/a.raw", "s1"); err != nil {
		t.Fatal(err)
	}
	v2 := pattern(4, 4*fs.BlockSize)
	x.write(x.a, v2, 0)

	// A file.
	ino, err := x.cl.Clone("vms/a.raw", "vms/b.raw")
	if err != nil {
		t.Fatal(err)
	}
	if ino != x.lookup("vms/b.raw") || ino == x.a {
		t.Fatalf("clone answered ino %d", ino)
	}
	if got := x.read(ino, len(v2)); !bytes.Equal(got, v2) {
		t.Fatal("clone content differs")
	}
	x.write(ino, []byte("only in b"), 0)
	if got := x.read(x.a, len(v2)); !bytes.Equal(got, v2) {
		t.Fatal("writing the clone changed the original")
	}

	// A snapshot.
	ino, err = x.cl.Clone(".snapshots/vms/a.raw/s1", "a-s1.raw")
	if err != nil {
		t.Fatal(err)
	}
	if ino != x.lookup("a-s1.raw") {
		t.Fatalf("snapshot clone answered ino %d", ino)
	}
	if got := x.read(ino, len(v1)); !bytes.Equal(got, v1) {
		t.Fatal("snapshot clone content differs from the snapshot")
	}
	_, err = x.cl.Clone(".snapshots/vms/a.raw/nope", "x.raw")
	wantKind(t, "clone of a missing snapshot", err, wire.KindNotFound, fs.ErrNotFound)
	_, err = x.cl.Clone(".snapshots/vms/missing.raw/s1", "x.raw")
	wantKind(t, "clone of a missing file's snapshot", err, wire.KindNotFound, fs.ErrNotFound)

	// A directory tree.
	ino, err = x.cl.Clone("vms", "vms2")
	if err != nil {
		t.Fatal(err)
	}
	if ino != x.lookup("vms2") {
		t.Fatalf("dir clone answered ino %d", ino)
	}
	if got := x.read(x.lookup("vms2/a.raw"), len(v2)); !bytes.Equal(got, v2) {
		t.Fatal("vms2/a.raw differs")
	}
	if got := x.read(x.lookup("vms2/b.raw"), 9); string(got[:9]) != "only in b" {
		t.Fatal("vms2/b.raw differs")
	}

	// Errors.
	_, err = x.cl.Clone("vms/a.raw", "vms/b.raw")
	wantKind(t, "clone onto an existing name", err, wire.KindExists, fs.ErrExists)
	if !strings.Contains(err.Error(), "vms/b.raw exists") {
		t.Fatalf("message %q does not name DST", err)
	}
	_, err = x.cl.Clone("vms/missing.raw", "c.raw")
	wantKind(t, "clone of a missing file", err, wire.KindNotFound, fs.ErrNotFound)
	if !strings.Contains(err.Error(), "vms/missing.raw") {
		t.Fatalf("message %q does not name SRC", err)
	}
	_, err = x.cl.Clone("vms/a.raw", "nodir/c.raw")
	wantKind(t, "clone into a missing dir", err, wire.KindNotFound, fs.ErrNotFound)
	if !strings.Contains(err.Error(), "nodir") {
		t.Fatalf("message %q does not name the missing dir", err)
	}
	_, err = x.cl.Clone("vms/a.raw", "vms/a.raw/c.raw")
	wantKind(t, "clone under a file", err, wire.KindNotDir, fs.ErrNotDir)
	_, err = x.cl.Clone("vms", "vms/inner")
	if err == nil {
		t.Fatal("cloned a directory into itself")
	}
}

// fixed is an engine answering describe, df and compact with known values,
// to check that every field crosses the wire.
type fixed struct{ engine }

var (
	fixedTime = time.Unix(1764580000, 123456789)
	fixedDesc = fs.Description{Ino: 12, Size: 1 << 30, Allocated: 5 << 20, Unique: 1 << 20, Shared: 4 << 20, SnapshotOnly: 3 << 20,
		Origin: "vms/base.raw@gold", Snapshots: []fs.Snapshot{{Name: "s1", ID: 7, Vol: 12, Created: fixedTime, Size: 1 << 29, Blocks: 99}}}
	fixedUsage   = fs.Usage{Files: 3, Snapshots: 4, Logical: 5, SnapshotLogical: 6, Physical: 7, Saved: 8, Stored: 9, Metadata: 10, Segments: 11}
	fixedCompact = fs.CompactStats{Segments: 2, Moved: 300, Freed: 4 << 20}
)

func (fixed) Resolve(p string) (uint64, error) {
	if p == "vms/a.raw" {
		return 12, nil
	}
	return 0, fs.ErrNotFound
}
func (fixed) Describe(ino uint64) (fs.Description, error) {
	if ino != 12 {
		return fs.Description{}, fs.ErrNotFound
	}
	return fixedDesc, nil
}
func (fixed) Usage() (fs.Usage, error)          { return fixedUsage, nil }
func (fixed) Compact() (fs.CompactStats, error) { return fixedCompact, nil }

func TestDescribeDFCompactWire(t *testing.T) {
	_, dir := start(t, fixed{})
	cl, err := wire.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	d, err := cl.Describe("vms/a.raw")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Snapshots) != 1 || !d.Snapshots[0].CreatedTime().Equal(fixedTime) {
		t.Fatalf("snapshots %+v", d.Snapshots)
	}
	if d.Ino != fixedDesc.Ino || d.Size != fixedDesc.Size || d.Allocated != fixedDesc.Allocated || d.Unique != fixedDesc.Unique ||
		d.Shared != fixedDesc.Shared || d.SnapshotOnly != fixedDesc.SnapshotOnly || d.Origin != fixedDesc.Origin ||
		d.Snapshots[0] != toWireSnapshot(fixedDesc.Snapshots[0]) {
		t.Fatalf("describe\n%+v\nwant\n%+v", d, fixedDesc)
	}
	_, err = cl.Describe("vms/b.raw")
	wantKind(t, "describe a missing file", err, wire.KindNotFound, fs.ErrNotFound)
	u, err := cl.Usage()
	if err != nil || u != (wire.Usage{Files: 3, Snapshots: 4, Logical: 5, SnapshotLogical: 6, Physical: 7, Saved: 8, Stored: 9, Metadata: 10, Segments: 11}) {
		t.Fatalf("usage %+v, %v; want %+v", u, err, fixedUsage)
	}
	st, err := cl.Compact()
	if err != nil || st != (wire.Compaction{Segments: 2, Moved: 300, Freed: 4 << 20}) {
		t.Fatalf("compact %+v, %v; want %+v", st, err, fixedCompact)
	}
}

func TestDescribeDFCompactRoundTrip(t *testing.T) {
	x := newFixture(t)
	const bs = fs.BlockSize
	x.write(x.a, pattern(5, 4*bs), 0)
	if _, err := x.cl.SnapshotCreate("vms/a.raw", "s1"); err != nil {
		t.Fatal(err)
	}
	x.write(x.a, pattern(6, bs), 0) // block 0 now differs from s1's

	d, err := x.cl.Describe("vms/a.raw")
	if err != nil {
		t.Fatal(err)
	}
	if d.Ino != x.a || d.Size != 4*bs || d.Allocated != 4*bs || d.Unique != bs || d.Shared != 3*bs ||
		d.SnapshotOnly != bs || d.Origin != "" || len(d.Snapshots) != 1 || d.Snapshots[0].Name != "s1" || d.Snapshots[0].Size != 4*bs {
		t.Fatalf("describe a.raw: %+v", d)
	}
	if _, err := x.cl.Clone("vms/a.raw", "vms/b.raw"); err != nil {
		t.Fatal(err)
	}
	if _, err := x.cl.Clone(".snapshots/vms/a.raw/s1", "c.raw"); err != nil {
		t.Fatal(err)
	}
	for path, origin := range map[string]string{"vms/b.raw": "vms/a.raw", "c.raw": "vms/a.raw@s1"} {
		d, err := x.cl.Describe(path)
		if err != nil {
			t.Fatal(err)
		}
		if d.Origin != origin || d.Unique != 0 || d.Shared != 4*bs || len(d.Snapshots) != 0 {
			t.Fatalf("describe %s: %+v, want origin %q, all shared", path, d, origin)
		}
	}
	_, err = x.cl.Describe("vms")
	wantKind(t, "describe a directory", err, wire.KindIsDir, fs.ErrIsDir)
	_, err = x.cl.Describe("vms/missing")
	wantKind(t, "describe a missing file", err, wire.KindNotFound, fs.ErrNotFound)

	u, err := x.cl.Usage()
	if err != nil {
		t.Fatal(err)
	}
	// a, b, c map 4 blocks each, s1 4; distinct: s1's 4 and a's new block 0.
	if u.Files != 3 || u.Snapshots != 1 || u.Logical != 12*bs || u.SnapshotLogical != 4*bs || u.Physical != 5*bs ||
		u.Saved != 11*bs || u.Segments < 1 || u.Stored < u.Physical || u.Metadata == 0 {
		t.Fatalf("df: %+v", u)
	}

	// Make sealed segments mostly dead: write 200 blocks (the fixture's
	// segments hold 64), then overwrite 3 of every 4.
	model := pattern(10, 200*bs)
	x.write(x.a, model, 0)
	for i := 0; i < 200; i++ {
		if i%4 != 0 {
			p := pattern(byte(20+i), bs)
			copy(model[i*bs:], p)
			x.write(x.a, p, int64(i*bs))
		}
	}
	if err := x.f.Commit(); err != nil {
		t.Fatal(err)
	}
	before, err := x.cl.Usage()
	if err != nil {
		t.Fatal(err)
	}
	st, err := x.cl.Compact()
	if err != nil {
		t.Fatal(err)
	}
	after, err := x.cl.Usage()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compact: %+v; stored %d -> %d", st, before.Stored, after.Stored)
	if st.Segments == 0 || st.Moved == 0 || st.Freed == 0 || after.Stored >= before.Stored || after.Physical != before.Physical {
		t.Fatalf("compaction: %+v, stored %d -> %d, physical %d -> %d", st, before.Stored, after.Stored, before.Physical, after.Physical)
	}
	if got := x.read(x.a, 200*bs); !bytes.Equal(got, model) {
		t.Fatal("content changed by compaction")
	}
}
