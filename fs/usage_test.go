package fs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/meta"
)

const rec = blocks.RecordSize

// pattern is the content of block blk of a file at version v: every
// block of every version differs.
func pattern(ino, blk uint64, v byte) []byte {
	b := make([]byte, BlockSize)
	for i := 0; i < BlockSize; i += 16 {
		binary.LittleEndian.PutUint64(b[i:], ino<<32|blk)
		b[i+8] = v
	}
	return b
}

// files is a model: per inode, the content of every block.
type files map[uint64][][]byte

func (m files) write(t *testing.T, f *FS, ino, first, n uint64, v byte) {
	t.Helper()
	buf := make([]byte, 0, n*BlockSize)
	for b := first; b < first+n; b++ {
		buf = append(buf, pattern(ino, b, v)...)
	}
	if _, err := f.WriteAt(ino, buf, int64(first*BlockSize)); err != nil {
		t.Fatal(err)
	}
	for uint64(len(m[ino])) < first+n {
		m[ino] = append(m[ino], make([]byte, BlockSize))
	}
	for b := first; b < first+n; b++ {
		m[ino][b] = buf[(b-first)*BlockSize : (b-first+1)*BlockSize]
	}
}

func (m files) copyRange(t *testing.T, f *FS, src, dst, first, n uint64) {
	t.Helper()
	if _, err := f.CopyRange(src, first*BlockSize, dst, first*BlockSize, n*BlockSize); err != nil {
		t.Fatal(err)
	}
	for uint64(len(m[dst])) < first+n {
		m[dst] = append(m[dst], make([]byte, BlockSize))
	}
	copy(m[dst][first:first+n], m[src][first:first+n])
}

func (m files) verify(t *testing.T, f *FS) {
	t.Helper()
	for ino, blks := range m {
		got := readAll(t, f, ino, (len(blks)+1)*BlockSize)
		if want := bytes.Join(blks, nil); !bytes.Equal(got, want) {
			t.Fatalf("file %d: %d bytes read differ from the model's %d", ino, len(got), len(want))
		}
	}
}

func storedBytes(t *testing.T, store blocks.Store) (uint64, int) {
	t.Helper()
	ids, err := store.List()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, id := range ids {
		sf, err := store.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		sz, _ := sf.Size()
		n += uint64(sz)
	}
	return n, len(ids)
}

// TestUsageAndDescribeWithSharedBlocks: a file of 100 blocks, its first
// 60 shared into a second file with copy_file_range, then 10 blocks of
// each overwritten; every figure is exact.
func TestUsageAndDescribeWithSharedBlocks(t *testing.T) {
	store := blocks.NewMemStore()
	f := openTest(t, t.TempDir(), store) // 64 records per segment
	defer f.Close()
	m := files{}
	a, b := create(t, f, "a"), create(t, f, "b")
	create(t, f, "empty")
	m.write(t, f, a, 0, 100, 1)
	m.copyRange(t, f, a, b, 0, 60)
	m.write(t, f, a, 0, 10, 2)  // a: 10 new, old 10..99; old 0..9 now only b's
	m.write(t, f, b, 50, 10, 2) // b: old 0..49 and 10 new; old 50..59 now only a's
	m.verify(t, f)

	u, err := f.Usage()
	if err != nil {
		t.Fatal(err)
	}
	want := Usage{Files: 3, Logical: 160 * BlockSize, Physical: 120 * BlockSize, Saved: 40 * BlockSize,
		Stored: 2*blocks.SegHeaderSize + 120*rec, Segments: 2, Metadata: u.Metadata}
	if u != want {
		t.Fatalf("usage\n got %+v\nwant %+v", u, want)
	}
	if u.Metadata == 0 {
		t.Fatal("no metadata size")
	}
	da, err := f.Describe(a)
	if err != nil {
		t.Fatal(err)
	}
	// a: new 0..9, old 50..59 (b overwrote them) and old 60..99 are a's
	// alone; b maps old 10..49 too.
	wantA := Description{Ino: a, Size: 100 * BlockSize, Allocated: 100 * BlockSize,
		Unique: 60 * BlockSize, Shared: 40 * BlockSize}
	if len(da.Snapshots) != 0 || da.Origin != "" {
		t.Fatalf("describe a: snapshots %v origin %q", da.Snapshots, da.Origin)
	}
	da.Snapshots = nil
	if da.Ino != wantA.Ino || da.Size != wantA.Size || da.Allocated != wantA.Allocated || da.Unique != wantA.Unique ||
		da.Shared != wantA.Shared || da.SnapshotOnly != 0 {
		t.Fatalf("describe a\n got %+v\nwant %+v", da, wantA)
	}
	db, err := f.Describe(b)
	if err != nil {
		t.Fatal(err)
	}
	if db.Size != 60*BlockSize || db.Allocated != 60*BlockSize || db.Unique != 20*BlockSize || db.Shared != 40*BlockSize {
		t.Fatalf("describe b: %+v", db)
	}
	// A file that maps one record twice (a copy within itself) counts
	// both blocks as allocated and as unique.
	if _, err := f.CopyRange(b, 0, b, 100*BlockSize, 2*BlockSize); err != nil {
		t.Fatal(err)
	}
	db, _ = f.Describe(b)
	if db.Allocated != 62*BlockSize || db.Unique != 22*BlockSize {
		t.Fatalf("describe b after a self copy: %+v", db)
	}
	// A snapshot of an empty file counts, and maps nothing.
	e, _ := f.Lookup(meta.RootIno, "empty")
	if _, err := f.SnapshotCreate(e.Ino, "s"); err != nil {
		t.Fatal(err)
	}
	if u, err := f.Usage(); err != nil || u.Snapshots != 1 || u.SnapshotLogical != 0 || u.Files != 3 {
		t.Fatalf("usage with an empty snapshot: %+v %v", u, err)
	}
	dirAttr, _ := f.Mkdir(meta.RootIno, "d", 0o755, 0, 0)
	if _, err := f.Describe(dirAttr.Ino); !errors.Is(err, ErrIsDir) {
		t.Fatalf("describe of a directory: %v", err)
	}
}

// TestUsageWithSnapshotsAndClones: a file of 100 blocks, a snapshot, a
// clone, and overwrites on both heads; every figure is exact.
func TestUsageWithSnapshotsAndClones(t *testing.T) {
	store := blocks.NewMemStore()
	f := openTest(t, t.TempDir(), store)
	defer f.Close()
	m := files{}
	a := create(t, f, "a")
	m.write(t, f, a, 0, 100, 1)
	if _, err := f.SnapshotCreate(a, "s1"); err != nil {
		t.Fatal(err)
	}
	ca, err := f.CloneWithOrigin(a, meta.RootIno, "c", "a")
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Ino
	m[c] = append([][]byte(nil), m[a]...)
	m.write(t, f, a, 0, 10, 2)  // r1
	m.write(t, f, c, 10, 10, 3) // r2
	m.write(t, f, c, 0, 10, 4)  // r4 (8 records fill the second segment, 2 start a third): old 0..9 now only s1's
	m.verify(t, f)
	// a: r1 + old 10..99 (all in s1): unique 10. s1 holds old 0..99; old
	// 0..9 nobody else: snapshot-only 10.
	d, err := f.Describe(a)
	if err != nil {
		t.Fatal(err)
	}
	if d.Size != 100*BlockSize || d.Allocated != 100*BlockSize || d.Unique != 10*BlockSize ||
		d.Shared != 90*BlockSize || d.SnapshotOnly != 10*BlockSize || len(d.Snapshots) != 1 || d.Snapshots[0].Name != "s1" {
		t.Fatalf("describe a: %+v", d)
	}
	d, err = f.Describe(c)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allocated != 100*BlockSize || d.Unique != 20*BlockSize || d.Shared != 80*BlockSize || d.SnapshotOnly != 0 ||
		d.Origin != "a" || len(d.Snapshots) != 0 {
		t.Fatalf("describe c: %+v", d)
	}
	u, err := f.Usage()
	if err != nil {
		t.Fatal(err)
	}
	want := Usage{Files: 2, Snapshots: 1, Logical: 200 * BlockSize, SnapshotLogical: 100 * BlockSize,
		Physical: 130 * BlockSize, Saved: 170 * BlockSize, Stored: 3*blocks.SegHeaderSize + 130*rec,
		Segments: 3, Metadata: u.Metadata}
	if u != want {
		t.Fatalf("usage\n got %+v\nwant %+v", u, want)
	}
}

// TestDescribeAndDfStopNoWriter: describe and df walk the trees as
// committed (a Pebble snapshot), holding no lock a writer needs: while one
// is parked in its walk, another volume is written and fsynced. (They used
// to hold the state lock exclusively through the walk: every write of
// every volume waited for it.)
func TestDescribeAndDfStopNoWriter(t *testing.T) {
	for _, what := range []string{"describe", "df"} {
		t.Run(what, func(t *testing.T) {
			f := openCached(t, t.TempDir(), blocks.NewMemStore(), 64<<20)
			defer f.Close()
			a, b := create(t, f, "a"), create(t, f, "b")
			for _, ino := range []uint64{a, b} {
				if _, err := f.WriteAt(ino, block(1, 64), 0); err != nil {
					t.Fatal(err)
				}
			}
			parked, release := make(chan struct{}), make(chan struct{})
			f.viewHook = func() {
				close(parked)
				<-release
			}
			errc := make(chan error, 1)
			go func() {
				var err error
				if what == "describe" {
					_, err = f.Describe(a)
				} else {
					_, err = f.Usage()
				}
				errc <- err
			}()
			<-parked
			wrote := make(chan error, 1)
			go func() {
				_, err := f.WriteAt(b, block(2, 8), 4*BlockSize)
				if err == nil {
					_, err = f.WriteAt(b, block(3, 1), 200*BlockSize) // extends b: a tree change
				}
				if err == nil {
					err = f.Fsync(b)
				}
				wrote <- err
			}()
			select {
			case err := <-wrote:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				close(release)
				t.Fatalf("a write and fsync of another volume waited for %s's walk", what)
			}
			close(release)
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}
