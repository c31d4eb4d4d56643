package fs

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/vafs/vafs/meta"
)

// journalRecords counts the fsync journal records in Pebble.
func journalRecords(t *testing.T, f *FS) int {
	t.Helper()
	n := 0
	if err := f.db.Journal(func(*meta.JournalRecord) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func journalOpts(d *pcDisk) Options {
	return d.options(Options{Logger: log.New(io.Discard, "", 0), SegmentBlocks: 64,
		WriteCache: 64 << 20, CommitInterval: 1 << 40, CompactInterval: -1})
}

func blockOf(v byte) []byte { return bytes.Repeat([]byte{v}, BlockSize) }

// settledFile creates name with nblk blocks of zeros and fsyncs it: a
// commit, so its tree is settled and its next small fsyncs can be journal
// records.
func settledFile(t *testing.T, f *FS, name string, nblk uint64) uint64 {
	t.Helper()
	ino := create(t, f, name)
	if err := f.Truncate(ino, nblk*BlockSize); err != nil {
		t.Fatal(err)
	}
	if err := f.Fsync(ino); err != nil {
		t.Fatal(err)
	}
	return ino
}

// TestFsyncJournalKeepsFsynced: small writes each followed by an fsync go
// through the journal (one synced Pebble record each, no commit), and a
// power cut keeps every one of them; writes after the last fsync are
// either there or not, block by block. With the record's sync deleted
// (meta.PutJournal committing without sync) or the journal's replay
// skipped, this fails.
func TestFsyncJournalKeepsFsynced(t *testing.T) {
	for _, direct := range []bool{false, true} {
		for _, random := range []bool{false, true} {
			t.Run(fmt.Sprintf("direct=%v,random-cut=%v", direct, random), func(t *testing.T) {
				d := newPCDisk(t, direct)
				opts := journalOpts(d)
				f, err := Open(opts)
				if err != nil {
					t.Fatal(err)
				}
				const nblk = 256
				a := settledFile(t, f, "a", nblk)
				want := make([][]byte, nblk)
				for i := range want {
					want[i] = blockOf(0)
				}
				rng := rand.New(rand.NewPCG(7, uint64(len(t.Name()))))
				later := map[int][]byte{}
				for round := range 6 {
					for i := range 40 {
						b := rng.IntN(nblk)
						n := 1 + rng.IntN(3)
						if b+n > nblk {
							n = nblk - b
						}
						p := bytes.Repeat([]byte{byte(round*40 + i + 1)}, n*BlockSize)
						if _, err := f.WriteAt(a, p, int64(b)*BlockSize); err != nil {
							t.Fatal(err)
						}
						for k := range n {
							want[b+k] = p[:BlockSize]
						}
						if err := f.Fsync(a); err != nil {
							t.Fatal(err)
						}
					}
					if got := journalRecords(t, f); got < 40 {
						t.Fatalf("round %d: %d journal records after 40 fsyncs of small writes: the journal is not used", round, got)
					}
					clear(later)
					for range 5 { // not fsynced
						b := rng.IntN(nblk)
						p := blockOf(0xee)
						if _, err := f.WriteAt(a, p, int64(b)*BlockSize); err != nil {
							t.Fatal(err)
						}
						later[b] = p
					}
					var cut *rand.Rand
					if random {
						cut = rand.New(rand.NewPCG(uint64(round), 3))
					}
					d.powerCut(f, cut)
					if f, err = Open(d.options(opts)); err != nil {
						t.Fatalf("round %d: open after the power cut: %v", round, err)
					}
					if n := journalRecords(t, f); n != 0 {
						t.Fatalf("round %d: %d journal records left after the mount applied them", round, n)
					}
					got := readAll(t, f, a, nblk*BlockSize)
					if len(got) != nblk*BlockSize {
						t.Fatalf("round %d: size %d after the power cut, want %d", round, len(got), nblk*BlockSize)
					}
					for b := range nblk {
						blk := got[b*BlockSize : (b+1)*BlockSize]
						if bytes.Equal(blk, want[b]) {
							continue
						}
						if l := later[b]; l != nil && bytes.Equal(blk, l) {
							want[b] = l
							continue
						}
						t.Fatalf("round %d: block %d is %d..., fsync acknowledged %d...", round, b, blk[0], want[b][0])
					}
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
				(&crashDisk{pc: d}).checkClean(t)
			})
		}
	}
}

// TestFsyncJournalRollback: a volume rolled back after a journaled fsync
// is, after a power cut, its snapshot: the rollback's commit deletes the
// record in its batch (a record left behind would be applied over the
// rolled-back tree at the next mount). Likewise a punch, a truncate and a
// delete after a journaled fsync, each fsynced (or committed) in turn.
func TestFsyncJournalRollback(t *testing.T) {
	d := newPCDisk(t, false)
	opts := journalOpts(d)
	f, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c, e := create(t, f, "a"), create(t, f, "b"), create(t, f, "c"), create(t, f, "e")
	for _, ino := range []uint64{a, b, c, e} {
		if _, err := f.WriteAt(ino, bytes.Repeat(blockOf(1), 8), 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Fsync(ino); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.SnapshotCreate(a, "s"); err != nil {
		t.Fatal(err)
	}
	for _, ino := range []uint64{a, b, c, e} {
		if _, err := f.WriteAt(ino, blockOf(9), 3*BlockSize); err != nil {
			t.Fatal(err)
		}
		if err := f.Fsync(ino); err != nil {
			t.Fatal(err)
		}
	}
	if n := journalRecords(t, f); n != 4 {
		t.Fatalf("%d journal records, want 4 (one per volume's fsync)", n)
	}
	if err := f.SnapshotRollback(a, "s", true); err != nil {
		t.Fatal(err)
	}
	if err := f.Fallocate(b, FallocKeepSize|FallocPunchHole, 3*BlockSize, BlockSize); err != nil {
		t.Fatal(err)
	}
	if err := f.Fsync(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(c, 2*BlockSize); err != nil {
		t.Fatal(err)
	}
	if err := f.Fsync(c); err != nil {
		t.Fatal(err)
	}
	if err := f.Unlink(meta.RootIno, "e"); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := journalRecords(t, f); n != 0 {
		t.Fatalf("%d journal records after commits that hold their blocks", n)
	}
	d.powerCut(f, nil)
	if f, err = Open(d.options(opts)); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := readAll(t, f, a, 8*BlockSize); !bytes.Equal(got, bytes.Repeat(blockOf(1), 8)) {
		t.Fatalf("a after its rollback and a power cut is not its snapshot (block 3 starts %d)", got[3*BlockSize])
	}
	wantB := bytes.Repeat(blockOf(1), 8)
	copy(wantB[3*BlockSize:], blockOf(0))
	if got := readAll(t, f, b, 8*BlockSize); !bytes.Equal(got, wantB) {
		t.Fatalf("b after its punch and a power cut: block 3 starts %d, want 0", got[3*BlockSize])
	}
	if got := readAll(t, f, c, 8*BlockSize); !bytes.Equal(got, bytes.Repeat(blockOf(1), 2)) {
		t.Fatalf("c after its truncate and a power cut: %d bytes", len(got))
	}
	if _, err := f.Lookup(meta.RootIno, "e"); err == nil {
		t.Fatal("e is back after its unlink was committed")
	}
}

// TestFsyncJournalRacingCommits: writers fsyncing small writes to their own
// volumes through the journal, beside commits, flushes, snapshots and a
// rollback of another volume; then a power cut. Every volume holds what
// its last fsync acknowledged, or a write made after it, block by block.
func TestFsyncJournalRacingCommits(t *testing.T) {
	d := newPCDisk(t, false)
	opts := journalOpts(d)
	f, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	const nvol, nblk = 4, 64
	inos := make([]uint64, nvol)
	for i := range inos {
		inos[i] = create(t, f, fmt.Sprint("v", i))
		if err := f.Truncate(inos[i], nblk*BlockSize); err != nil {
			t.Fatal(err)
		}
	}
	other := create(t, f, "other")
	if _, err := f.WriteAt(other, bytes.Repeat(blockOf(5), 4), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	// acked[v][b]: the value block b had at v's last acknowledged fsync;
	// since[v][b]: values written to it after that.
	acked := make([][]byte, nvol)
	since := make([][]map[byte]bool, nvol)
	for v := range nvol {
		acked[v] = make([]byte, nblk)
		since[v] = make([]map[byte]bool, nblk)
	}
	var wg, writers sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, nvol+1)
	for v := range nvol {
		writers.Add(1)
		go func() {
			defer writers.Done()
			rng := rand.New(rand.NewPCG(uint64(v), 9))
			cur := make([]byte, nblk)
			pending := make([]map[byte]bool, nblk)
			for i := 0; i < 300; i++ {
				b := rng.IntN(nblk)
				val := byte(1 + rng.IntN(250))
				if _, err := f.WriteAt(inos[v], blockOf(val), int64(b)*BlockSize); err != nil {
					errs <- err
					return
				}
				cur[b] = val
				if pending[b] == nil {
					pending[b] = map[byte]bool{}
				}
				pending[b][val] = true
				if rng.IntN(3) == 0 {
					continue // not fsynced yet
				}
				if err := f.Fsync(inos[v]); err != nil {
					errs <- err
					return
				}
				copy(acked[v], cur)
				clear(pending)
			}
			since[v] = pending
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var err error
			switch i % 4 {
			case 0:
				err = f.Commit()
			case 1:
				err = f.backgroundCommit()
			case 2:
				_, err = f.SnapshotCreate(other, fmt.Sprint("s", i))
			case 3:
				err = f.SnapshotRollback(other, fmt.Sprint("s", i-1), true)
			}
			if err != nil {
				errs <- err
				return
			}
		}
	}()
	// The writers end, then the commit loop.
	writers.Wait()
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	d.powerCut(f, nil)
	if f, err = Open(d.options(opts)); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for v := range nvol {
		got := readAll(t, f, inos[v], nblk*BlockSize)
		for b := range nblk {
			x := got[b*BlockSize]
			if !bytes.Equal(got[b*BlockSize:(b+1)*BlockSize], blockOf(x)) {
				t.Fatalf("volume %d block %d is torn", v, b)
			}
			if x != acked[v][b] && !since[v][b][x] {
				t.Fatalf("volume %d block %d is %d after the power cut; its last fsync acknowledged %d", v, b, x, acked[v][b])
			}
		}
	}
	if got := readAll(t, f, other, 4*BlockSize); !bytes.Equal(got, bytes.Repeat(blockOf(5), 4)) {
		t.Fatal("the rolled-back volume changed")
	}
}

// TestFsyncJournalNeighbourCommit: a neighbour's fsync that commits (its
// writes are too many for a record) must not delete a record whose blocks
// are still only cached: after a power cut the journaled blocks are there.
func TestFsyncJournalNeighbourCommit(t *testing.T) {
	d := newPCDisk(t, false)
	opts := journalOpts(d)
	f, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	v, u := create(t, f, "v"), create(t, f, "u")
	for _, ino := range []uint64{v, u} {
		if err := f.Truncate(ino, 1024*BlockSize); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		if _, err := f.WriteAt(v, blockOf(byte(10+i)), int64(i*7)*BlockSize); err != nil {
			t.Fatal(err)
		}
		if err := f.Fsync(v); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(u, bytes.Repeat(blockOf(byte(i+1)), 300), 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Fsync(u); err != nil { // 300 blocks: a commit, not a record
			t.Fatal(err)
		}
	}
	if n := journalRecords(t, f); n != 8 {
		t.Fatalf("%d journal records, want v's 8 (u's fsyncs commit)", n)
	}
	d.powerCut(f, nil)
	if f, err = Open(d.options(opts)); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := readAll(t, f, v, 1024*BlockSize)
	for i := range 8 {
		if b := got[i*7*BlockSize]; b != byte(10+i) {
			t.Fatalf("v's block %d is %d after the power cut, its fsync acknowledged %d", i*7, b, 10+i)
		}
	}
	if got := readAll(t, f, u, 300*BlockSize); !bytes.Equal(got, bytes.Repeat(blockOf(8), 300)) {
		t.Fatal("u is not what its last fsync acknowledged")
	}
}

// TestFsyncJournalSyncFailure: when the sync of a journal record fails
// (Pebble's WAL fdatasync), the fsync fails, and no later fsync returns
// success for data that a power cut then loses.
func TestFsyncJournalSyncFailure(t *testing.T) {
	d := newPCDisk(t, false)
	var armed atomic.Bool
	var fired atomic.Int32
	efs := &syncFailFS{FS: d.mfs, fail: func(name string) bool {
		if armed.Load() && strings.HasSuffix(name, ".log") {
			fired.Add(1)
			return true
		}
		return false
	}}
	opts := journalOpts(d)
	opts.MetaFS = efs
	f, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	a := settledFile(t, f, "a", 64)
	want := make([]byte, 64*BlockSize)
	if _, err := f.WriteAt(a, blockOf(1), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Fsync(a); err != nil {
		t.Fatal(err)
	}
	copy(want, blockOf(1))
	if journalRecords(t, f) != 1 {
		t.Fatal("the fsync wrote no journal record")
	}
	armed.Store(true)
	if _, err := f.WriteAt(a, blockOf(2), BlockSize); err != nil {
		t.Fatal(err)
	}
	// Pebble treats a failed WAL sync as fatal (meta's logger panics: the
	// mount stops, as for a failed commit); either way the fsync must not
	// succeed.
	failed, dead := "", false
	func() {
		defer func() {
			if r := recover(); r != nil {
				failed, dead = fmt.Sprint(r), true
			}
		}()
		if err := f.Fsync(a); err != nil {
			failed = err.Error()
		}
	}()
	if failed == "" {
		t.Fatal("an fsync whose journal record failed to sync returned success")
	}
	if fired.Load() == 0 {
		t.Fatal("the fault has not fired")
	}
	t.Logf("the fsync failed: %s", failed)
	armed.Store(false)
	// Later fsyncs (if the engine still runs): each one that succeeds must
	// hold after a power cut.
	acked := false
	for i := 0; i < 3 && !dead; i++ {
		func() {
			defer func() {
				if r := recover(); r != nil {
					dead = true
				}
			}()
			if _, err := f.WriteAt(a, blockOf(byte(3+i)), int64(2+i)*BlockSize); err != nil {
				return // a broken engine may refuse writes too
			}
			if err := f.Fsync(a); err == nil {
				acked = true
				copy(want[BlockSize:], blockOf(2))
				copy(want[(2+i)*BlockSize:], blockOf(byte(3+i)))
			}
		}()
	}
	d.mfs.SetIgnoreSyncs(true)
	d.store = d.store.Crash()
	func() {
		defer func() { recover() }() // Pebble after a fatal error may panic again closing
		mCrash(f)
	}()
	f.lock.Close()
	d.mfs.ResetToSyncedState()
	d.mfs.SetIgnoreSyncs(false)
	opts.MetaFS = d.mfs
	f, err = Open(d.options(opts))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := readAll(t, f, a, 64*BlockSize)
	for b := range 64 {
		w := want[b*BlockSize]
		g := got[b*BlockSize]
		if w != 0 && g != w {
			t.Fatalf("block %d is %d after the power cut, an fsync acknowledged %d (later fsyncs acknowledged: %v)", b, g, w, acked)
		}
	}
	t.Logf("fsyncs after the failed one acknowledged: %v", acked)
}

// syncFailFS is a vfs.FS whose files' syncs (Sync, SyncData, SyncTo) fail
// with EIO while fail(name) says so. (errorfs of this Pebble injects into
// Sync only; Pebble's WAL uses SyncData.)
type syncFailFS struct {
	vfs.FS
	fail func(name string) bool
}

type syncFailFile struct {
	vfs.File
	name string
	fs   *syncFailFS
}

func (s *syncFailFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return &syncFailFile{File: f, name: name, fs: s}, nil
}

func (s *syncFailFS) Create(name string) (vfs.File, error) {
	f, err := s.FS.Create(name)
	return s.wrap(name, f, err)
}

func (s *syncFailFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := s.FS.Open(name, opts...)
	return s.wrap(name, f, err)
}

func (s *syncFailFS) OpenReadWrite(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := s.FS.OpenReadWrite(name, opts...)
	return s.wrap(name, f, err)
}

func (s *syncFailFS) ReuseForWrite(oldname, newname string) (vfs.File, error) {
	f, err := s.FS.ReuseForWrite(oldname, newname)
	return s.wrap(newname, f, err)
}

func (f *syncFailFile) Sync() error {
	if f.fs.fail(f.name) {
		return syscall.EIO
	}
	return f.File.Sync()
}

func (f *syncFailFile) SyncData() error {
	if f.fs.fail(f.name) {
		return syscall.EIO
	}
	return f.File.SyncData()
}

func (f *syncFailFile) SyncTo(length int64) (bool, error) {
	if f.fs.fail(f.name) {
		return false, syscall.EIO
	}
	return f.File.SyncTo(length)
}

// TestFsckReportsJournal: fsck counts the records a crash left (fsynced
// data the next mount applies), keeps them, and calls the data dir clean;
// after the mount applied them there are none.
func TestFsckReportsJournal(t *testing.T) {
	d := newPCDisk(t, false)
	opts := journalOpts(d)
	f, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	a := settledFile(t, f, "a", 64)
	for i := range 3 {
		if _, err := f.WriteAt(a, bytes.Repeat(blockOf(byte(i+1)), 2), int64(i*10)*BlockSize); err != nil {
			t.Fatal(err)
		}
		if err := f.Fsync(a); err != nil {
			t.Fatal(err)
		}
	}
	d.powerCut(f, nil)
	for _, repair := range []bool{false, true} {
		check := Check
		if repair {
			check = Repair
		}
		rep, err := check(d.options(opts))
		if err != nil {
			t.Fatal(err)
		}
		if rep.JournalRecords != 3 || rep.JournalBlocks != 6 || !rep.Clean() {
			t.Fatalf("repair %v: %d records, %d blocks, clean %v (%v); want 3, 6, clean", repair, rep.JournalRecords, rep.JournalBlocks, rep.Clean(), rep.Problems)
		}
	}
	if f, err = Open(d.options(opts)); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, f, a, 64*BlockSize)
	for i := range 3 {
		if got[i*10*BlockSize] != byte(i+1) || got[(i*10+1)*BlockSize] != byte(i+1) {
			t.Fatalf("write %d not there after the mount applied the journal", i)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Check(d.options(opts))
	if err != nil {
		t.Fatal(err)
	}
	if rep.JournalRecords != 0 || !rep.Clean() {
		t.Fatalf("after the mount: %d records, clean %v", rep.JournalRecords, rep.Clean())
	}
}

// TestFsyncJournalAfterBurst: a burst of new data followed by an fsync
// makes the volume write through (nothing coalesced: judge); a writer
// that then syncs after every small write ends that at its first fsync,
// and its next fsyncs are journal records. (Before, write-through held
// for 10 s and every fsync committed.)
func TestFsyncJournalAfterBurst(t *testing.T) {
	d := newPCDisk(t, false)
	f, err := Open(journalOpts(d))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := settledFile(t, f, "a", 1024)
	if _, err := f.WriteAt(a, bytes.Repeat(blockOf(1), 600), 0); err != nil { // a burst, cached
		t.Fatal(err)
	}
	if err := f.Fsync(a); err != nil {
		t.Fatal(err)
	}
	if f.vol(a).c.throughUntil.Load() == 0 {
		t.Fatal("the burst did not make the volume write through: the test does not test what it says")
	}
	for i := range 5 {
		if _, err := f.WriteAt(a, blockOf(byte(2+i)), int64(700+i)*BlockSize); err != nil {
			t.Fatal(err)
		}
		if err := f.Fsync(a); err != nil {
			t.Fatal(err)
		}
	}
	if n := journalRecords(t, f); n < 4 {
		t.Fatalf("%d journal records after 5 small fsyncs following a burst, want at least 4", n)
	}
}
