package fs

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/meta"
)

// fsckDir is a closed data dir with one file "a" of 200 blocks of random
// data (segments of 64 records: four segments) and the host id.
type fsckDir struct {
	dir   string
	store *blocks.MemStore
	host  uint32
	data  []byte
	segs  []blocks.SegmentID // the segments a's blocks are in, by block
}

func newFsckDir(t *testing.T) *fsckDir {
	t.Helper()
	d := &fsckDir{dir: t.TempDir(), store: blocks.NewMemStore(), data: make([]byte, 200*BlockSize)}
	rand.New(rand.NewSource(1)).Read(d.data)
	f := openTest(t, d.dir, d.store)
	a := create(t, f, "a")
	mustWrite(t, f, a, d.data, 0)
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	for blk := uint64(0); blk < 200; blk += 64 {
		d.segs = append(d.segs, segOf(t, f, a, blk))
	}
	d.host = f.db.Super().HostID
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *fsckDir) opts() Options {
	return Options{DataDir: d.dir, Store: d.store, Logger: log.New(io.Discard, "", 0), SegmentBlocks: 64, WriteCache: -1}
}

// putSegment stores a segment of n bytes that no tree references.
func putSegment(t *testing.T, store blocks.Store, id blocks.SegmentID, n int) {
	t.Helper()
	sf, err := store.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sf.WriteAt(bytes.Repeat([]byte{0x5a}, n), 0); err != nil {
		t.Fatal(err)
	}
	sf.Close()
}

// setSegCount writes segment seg's stored count in a closed data dir (0
// deletes the key: a lost count).
func setSegCount(t *testing.T, dir string, seg blocks.SegmentID, n int64) {
	t.Helper()
	db, err := meta.Open(filepath.Join(dir, "meta"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	b.SetSegRefs(uint64(seg), n)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// readA opens the data dir, reads a whole and closes it again.
func (d *fsckDir) readA(t *testing.T) {
	t.Helper()
	f, err := Open(d.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, err := f.Lookup(meta.RootIno, "a")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(d.data))
	if n, err := f.ReadAt(a.Ino, got, 0); err != nil || n != len(got) || !bytes.Equal(got, d.data) {
		t.Fatalf("a reads back %d bytes, err %v, equal %v", n, err, bytes.Equal(got, d.data))
	}
}

func problemsWith(rep *CheckReport, sub string) int {
	n := 0
	for _, p := range rep.Problems {
		if strings.Contains(p, sub) {
			n++
		}
	}
	return n
}

// dirHashes hashes every file under dir (LOCK, meta/...), by path.
func dirHashes(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			out[p+"/"] = [32]byte{}
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[p] = sha256.Sum256(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func storeHashes(t *testing.T, store blocks.Store) map[blocks.SegmentID][32]byte {
	t.Helper()
	ids, err := store.List()
	if err != nil {
		t.Fatal(err)
	}
	out := map[blocks.SegmentID][32]byte{}
	for _, id := range ids {
		sf, err := store.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := sf.Size()
		b := make([]byte, n)
		sf.ReadAt(b, 0)
		sf.Close()
		out[id] = sha256.Sum256(b)
	}
	return out
}

func sameHashes[K comparable](t *testing.T, what string, before, after map[K][32]byte) {
	t.Helper()
	for k, h := range before {
		if a, ok := after[k]; !ok {
			t.Errorf("%s: %v is gone", what, k)
		} else if a != h {
			t.Errorf("%s: %v changed", what, k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s: %v appeared", what, k)
		}
	}
}

// TestFsckKeepsStraySegment: a segment of this host that no tree
// references survives fsck and is reported with its size. (Before fsck
// was read-only it ran Open, whose sweep deleted it, and said clean.)
func TestFsckKeepsStraySegment(t *testing.T) {
	d := newFsckDir(t)
	stray := blocks.MakeSegmentID(d.host, 1<<30)
	putSegment(t, d.store, stray, 12345)
	rep, err := Check(d.opts())
	if err != nil {
		t.Fatal(err)
	}
	if !stored(d.store, stray) {
		t.Fatal("fsck deleted a segment no tree references")
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems: %v", rep.Problems)
	}
	if u := unreferenced(rep); len(u) != 1 || u[0].ID != stray || u[0].Size != 12345 || u[0].Foreign {
		t.Fatalf("unreferenced segments reported: %+v, want %s of 12345 bytes", u, stray)
	}
}

// TestFsckLostSegmentCount: a segment whose stored count is lost is
// reported with the count the trees hold, and fsck deletes nothing.
// (Before, fsck's Open deleted the segment on its count of 0 and then
// reported it unreadable.)
func TestFsckLostSegmentCount(t *testing.T) {
	d := newFsckDir(t)
	lost := d.segs[1]
	setSegCount(t, d.dir, lost, 0)
	rep, err := Check(d.opts())
	if err != nil {
		t.Fatal(err)
	}
	if !stored(d.store, lost) {
		t.Fatal("fsck deleted a segment the trees use")
	}
	if want := "segment " + lost.String() + ": stored 0 references, trees hold 64"; problemsWith(rep, want) != 1 {
		t.Errorf("want %q among the problems: %v", want, rep.Problems)
	}
	if rep.MissingObjects != 0 || rep.CorruptBlocks != 0 || len(missing(rep)) != 0 {
		t.Errorf("%d unreadable, %d corrupt, missing %v", rep.MissingObjects, rep.CorruptBlocks, missing(rep))
	}
	d.readA(t)
}

// TestFsckReadOnly: fsck of a crashed data dir (uncommitted writes, a
// stray segment) changes no byte of it, LOCK and Pebble's files included.
func TestFsckReadOnly(t *testing.T) {
	d := newFsckDir(t)
	f := openTest(t, d.dir, d.store)
	a, err := f.Lookup(meta.RootIno, "a")
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, f, a.Ino, fill(7, 100*BlockSize), 0)
	if err := f.Fsync(a.Ino); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, f, a.Ino, fill(8, 100*BlockSize), 50*BlockSize) // never committed
	crash(f)
	putSegment(t, d.store, blocks.MakeSegmentID(d.host, 1<<30), 5000)
	files, segs := dirHashes(t, d.dir), storeHashes(t, d.store)
	rep, err := Check(d.opts())
	if err != nil {
		t.Fatal(err)
	}
	sameHashes(t, "data dir", files, dirHashes(t, d.dir))
	sameHashes(t, "segments", segs, storeHashes(t, d.store))
	if len(rep.Problems) != 0 || len(unreferenced(rep)) == 0 {
		t.Errorf("problems %v, unreferenced %v", rep.Problems, unreferenced(rep))
	}
}

// TestFsckNotADataDir: a missing directory, an empty one and one of other
// files are errors (meta.ErrNotVafs), and fsck creates nothing in them.
// (Before, fsck ran Open, which made a fresh data dir and said clean.)
func TestFsckNotADataDir(t *testing.T) {
	base := t.TempDir()
	other := filepath.Join(base, "other")
	os.Mkdir(other, 0o755)
	os.WriteFile(filepath.Join(other, "notes.txt"), []byte("hello"), 0o644)
	os.Mkdir(filepath.Join(base, "empty"), 0o755)
	before := dirHashes(t, base)
	for _, dir := range []string{filepath.Join(base, "typo"), filepath.Join(base, "empty"), other, filepath.Join(other, "notes.txt")} {
		_, err := Check(Options{DataDir: dir, Store: blocks.NewMemStore(), Logger: log.New(io.Discard, "", 0)})
		if !errors.Is(err, meta.ErrNotVafs) {
			t.Errorf("fsck of %s: %v, want meta.ErrNotVafs", dir, err)
		}
	}
	sameHashes(t, "base", before, dirHashes(t, base))
}

// TestFsckRefusesMounted: a data dir a mount holds is refused.
func TestFsckRefusesMounted(t *testing.T) {
	d := newFsckDir(t)
	f := openTest(t, d.dir, d.store)
	defer f.Close()
	if _, err := Check(d.opts()); !errors.Is(err, ErrLocked) {
		t.Fatalf("fsck of a mounted data dir: %v, want ErrLocked", err)
	}
	if _, err := Repair(d.opts()); !errors.Is(err, ErrLocked) {
		t.Fatalf("fsck --repair of a mounted data dir: %v, want ErrLocked", err)
	}
}

// TestFsckRepair: --repair removes the stray segment of this host, rewrites
// the lost count to what the trees hold and says so; a second fsck is clean
// and the data reads back.
func TestFsckRepair(t *testing.T) {
	d := newFsckDir(t)
	stray := blocks.MakeSegmentID(d.host, 1<<30)
	putSegment(t, d.store, stray, 4096)
	lost := d.segs[2]
	setSegCount(t, d.dir, lost, 0)
	rep, err := Repair(d.opts())
	if err != nil {
		t.Fatal(err)
	}
	if stored(d.store, stray) {
		t.Error("the stray segment is still stored")
	}
	if !stored(d.store, lost) {
		t.Fatal("repair deleted a segment the trees use")
	}
	t.Logf("repairs:\n  %s", strings.Join(repairs(rep), "\n  "))
	var removed, recounted, seq bool
	for _, l := range repairs(rep) {
		removed = removed || strings.Contains(l, "removed segment "+stray.String())
		recounted = recounted || strings.Contains(l, "segment "+lost.String()+": count 0 -> 64")
		seq = seq || strings.Contains(l, "next segment sequence")
	}
	if !removed || !recounted || !seq || len(repairs(rep)) != 3 {
		t.Errorf("repairs: want the stray removed, the count of %s rewritten and the sequence raised past the stray", lost)
	}
	rep, err = Check(d.opts())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || len(unreferenced(rep)) != 0 {
		t.Fatalf("after repair: problems %v, unreferenced %v", rep.Problems, unreferenced(rep))
	}
	d.readA(t)
	if rep, err = Repair(d.opts()); err != nil || len(repairs(rep)) != 0 {
		t.Fatalf("repair of a clean data dir: %v, changed %v", err, repairs(rep))
	}
}

// TestForeignSegmentNeverRemoved: a segment whose host id is not this data
// dir's is never removed, by a mount (open and close) or by fsck --repair,
// and fsck reports it. (Before, Open's sweep deleted it.)
func TestForeignSegmentNeverRemoved(t *testing.T) {
	d := newFsckDir(t)
	foreign := blocks.MakeSegmentID(d.host^0x800000, 3)
	putSegment(t, d.store, foreign, 8192)
	d.readA(t) // open and close
	if !stored(d.store, foreign) {
		t.Fatal("a mount removed another host's segment")
	}
	rep, err := Repair(d.opts())
	if err != nil {
		t.Fatal(err)
	}
	if !stored(d.store, foreign) {
		t.Fatal("fsck --repair removed another host's segment")
	}
	if len(repairs(rep)) != 0 {
		t.Errorf("repairs: %v", repairs(rep))
	}
	rep, err = Check(d.opts())
	if err != nil {
		t.Fatal(err)
	}
	if u := unreferenced(rep); len(u) != 1 || u[0].ID != foreign || !u[0].Foreign || u[0].Size != 8192 {
		t.Errorf("unreferenced: %+v", u)
	}
	if problemsWith(rep, foreign.String()) != 1 {
		t.Errorf("problems: %v", rep.Problems)
	}
}

// TestFsckCorruptAndMissing: a corrupt record and a segment the trees use
// that is gone are reported precisely.
func TestFsckCorruptAndMissing(t *testing.T) {
	d := newFsckDir(t)
	d.store.Corrupt(d.segs[0], blocks.RecordOffset(5)+100)
	if err := d.store.Remove(d.segs[3]); err != nil {
		t.Fatal(err)
	}
	rep, err := Check(d.opts())
	if err != nil {
		t.Fatal(err)
	}
	if rep.CorruptBlocks != 1 || problemsWith(rep, "segment "+d.segs[0].String()+" index 5") != 1 {
		t.Errorf("corrupt blocks %d, problems %v", rep.CorruptBlocks, rep.Problems)
	}
	if m := missing(rep); len(m) != 1 || m[d.segs[3]] != 200-3*64 {
		t.Errorf("missing %v", m)
	}
	if problemsWith(rep, "segment "+d.segs[3].String()+" is missing") != 1 {
		t.Errorf("problems %v", rep.Problems)
	}
}

// TestFsckSegmentSequence: a segment sequence that is not above every
// segment of this host the trees use is a problem (the next mount would
// hand the number out again); --repair raises it.
func TestFsckSegmentSequence(t *testing.T) {
	d := newFsckDir(t)
	p, err := pebble.Open(filepath.Join(d.dir, "meta"), &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, closer, err := p.Get([]byte("S"))
	if err != nil {
		t.Fatal(err)
	}
	var sb meta.Superblock
	err = meta.DecodeSuperblock(v, &sb)
	closer.Close()
	if err != nil {
		t.Fatal(err)
	}
	sb.NextSeq = d.segs[1].Seq() // segments 1 to 3 are in use at or above it
	enc, err := msgpack.Marshal(&sb)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Set([]byte("S"), append([]byte{1}, enc...), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	p.Close()
	rep := mustCheck(t, d)
	want := fmt.Sprintf("next segment sequence %d is not above %d, the sequence of segment %s", sb.NextSeq, d.segs[3].Seq(), d.segs[3])
	if problemsWith(rep, want) != 1 || len(rep.Problems) != 1 {
		t.Fatalf("want %q, problems %v", want, rep.Problems)
	}
	if rep, err = Repair(d.opts()); err != nil || len(repairs(rep)) != 1 {
		t.Fatalf("repair: %v, %v", err, repairs(rep))
	}
	if rep := mustCheck(t, d); len(rep.Problems) != 0 || rep.Super.NextSeq != d.segs[3].Seq()+1 {
		t.Fatalf("after repair: next sequence %d, problems %v", rep.Super.NextSeq, rep.Problems)
	}
}
