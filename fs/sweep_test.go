package fs

import (
	"bytes"
	"log"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble"

	"github.com/vafs/vafs/blocks"
)

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestOpenKeepsSegmentWithLostCount: a segment the trees use whose stored
// count is lost is kept at mount, the mount says so loudly, the data reads
// back, and after the mount the count is right again. (Before, Open's
// sweep deleted the segment on its count of 0: the file lost its blocks.)
func TestOpenKeepsSegmentWithLostCount(t *testing.T) {
	d := newFsckDir(t)
	lost := d.segs[1]
	setSegCount(t, d.dir, lost, 0)
	var lb logBuf
	opts := d.opts()
	opts.Logger = log.New(&lb, "", 0)
	f, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !stored(d.store, lost) {
		t.Fatal("the mount deleted a segment the trees use because its count was lost")
	}
	if want := "segment " + lost.String() + " has no live count but trees reference it"; !strings.Contains(lb.String(), want) {
		t.Errorf("log does not say %q:\n%s", want, lb.String())
	}
	// An overwrite of one of its blocks must not drive its count below 0.
	mustWrite(t, f, segFile(t, f), fill(3, BlockSize), 70*BlockSize)
	copy(d.data[70*BlockSize:], fill(3, BlockSize))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !stored(d.store, lost) {
		t.Fatal("closing the mount deleted the segment")
	}
	d.readA(t)
	checkAllClean(t, d.dir, d.store)
	if u := unreferenced(mustCheck(t, d)); len(u) != 0 {
		t.Fatalf("unreferenced after the mounts: %v", u)
	}
}

func segFile(t *testing.T, f *FS) uint64 {
	t.Helper()
	a, err := f.Lookup(1, "a")
	if err != nil {
		t.Fatal(err)
	}
	return a.Ino
}

func mustCheck(t *testing.T, d *fsckDir) *CheckReport {
	t.Helper()
	rep, err := Check(d.opts())
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestOpenRemovesUnreferenced: a segment of this host that no tree
// reaches (appended after the last commit) is removed at mount by the walk.
func TestOpenRemovesUnreferenced(t *testing.T) {
	d := newFsckDir(t)
	stray := blocks.MakeSegmentID(d.host, 1<<30)
	putSegment(t, d.store, stray, 4096)
	walks := sweepWalks.Load()
	d.readA(t)
	if stored(d.store, stray) {
		t.Fatal("the mount kept a segment no tree references")
	}
	if sweepWalks.Load() == walks {
		t.Fatal("the segment was removed without a walk")
	}
	// A clean data dir is opened and closed without a walk.
	walks = sweepWalks.Load()
	d.readA(t)
	if n := sweepWalks.Load() - walks; n != 0 {
		t.Fatalf("a clean open and close walked the trees %d times", n)
	}
	checkAllClean(t, d.dir, d.store)
}

// TestCloseSweepsLastSegment: a mount whose last segment ends up
// unreferenced (everything in it deleted) removes it at close, after a walk.
func TestCloseSweepsLastSegment(t *testing.T) {
	d := newFsckDir(t)
	f, err := Open(d.opts())
	if err != nil {
		t.Fatal(err)
	}
	b := create(t, f, "b")
	mustWrite(t, f, b, fill(9, 10*BlockSize), 0)
	last := segOf(t, f, b, 0)
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := f.Unlink(1, "b"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if stored(d.store, last) {
		t.Fatalf("segment %s, which nothing references, is still stored after close", last)
	}
	d.readA(t)
	if rep := mustCheck(t, d); len(rep.Problems) != 0 || len(unreferenced(rep)) != 0 {
		t.Fatalf("problems %v, unreferenced %v", rep.Problems, unreferenced(rep))
	}
}

// TestDamagedTreeRemovesNothing: with a tree node undecodable the walk
// cannot tell what references a segment, so neither fsck --repair nor a
// mount removes the unreferenced one, and the mount says why.
func TestDamagedTreeRemovesNothing(t *testing.T) {
	d := newFsckDir(t)
	stray := blocks.MakeSegmentID(d.host, 1<<30)
	putSegment(t, d.store, stray, 4096)
	p, err := pebble.Open(filepath.Join(d.dir, "meta"), &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	it, err := p.NewIter(&pebble.IterOptions{LowerBound: []byte("n"), UpperBound: []byte("o")})
	if err != nil || !it.First() {
		t.Fatalf("no tree node stored: %v", err)
	}
	node := append([]byte(nil), it.Key()...)
	it.Close()
	if err := p.Set(node, []byte{0xff}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	p.Close()

	rep, err := Repair(d.opts())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Damaged || !stored(d.store, stray) {
		t.Fatalf("damaged %v, stray stored %v; repairs %v", rep.Damaged, stored(d.store, stray), repairs(rep))
	}
	// The node was a root: the walk reaches none of the file's segments
	// either, and none may go.
	if r := repairs(rep); !strings.Contains(strings.Join(r, "\n"), "not removing 5 unreferenced segments") {
		t.Errorf("repairs: %v", r)
	}
	for _, seg := range d.segs {
		if !stored(d.store, seg) {
			t.Fatalf("repair removed segment %s of a damaged tree", seg)
		}
	}
	var lb logBuf
	opts := d.opts()
	opts.Logger = log.New(&lb, "", 0)
	f, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if !stored(d.store, stray) {
		t.Fatal("a mount removed a segment although it could not walk every tree")
	}
	if !strings.Contains(lb.String(), "keeping them all") {
		t.Errorf("the mount does not say why it kept the segment:\n%s", lb.String())
	}
}
