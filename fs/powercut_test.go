package fs

// The power-cut model for fs tests (issue 11 item 8). A SIGKILL keeps the
// page cache, so a crash test that kills the process cannot see a missing
// fsync; a power cut loses everything not synced. pcDisk keeps a test's
// FS on a disk that can lose power: Pebble on a strict vfs.MemFS (what was
// not synced is dropped by ResetToSyncedState, as in Pebble's own crash
// tests) and the segments on a blocks.PowerCutStore (bytes not synced,
// names not made durable by SyncNames are dropped; or, cut at random, any
// subset of them is kept, torn).

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/vafs/vafs/blocks"
)

type pcDisk struct {
	dir    string // the data dir: only its lock file is used
	mfs    *vfs.MemFS
	store  *blocks.PowerCutStore
	direct bool
	cuts   int
}

// newPCDisk makes an empty disk; direct makes its segment files
// blocks.DirectFiles, so the log takes the staged-chunk path that the real
// store (cachessd) takes.
//
// The disk comes with meta/ made durable: vafs does not fsync the data
// dir after Pebble creates meta/ in it (Pebble syncs meta/, not its
// parent), so on this disk a cut loses every commit of a data dir whose
// directory entry for meta/ nothing has synced yet. That is a window of
// the first mount only (a real journal commits it within seconds); the
// tests here start past it.
func newPCDisk(t testing.TB, direct bool) *pcDisk {
	d := &pcDisk{dir: t.TempDir(), mfs: vfs.NewStrictMem(), store: blocks.NewPowerCutStore(direct), direct: direct}
	if err := d.mfs.MkdirAll("meta", 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := d.mfs.OpenDir("/")
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Sync(); err != nil {
		t.Fatal(err)
	}
	root.Close()
	return d
}

// options points o at the disk.
func (d *pcDisk) options(o Options) Options {
	o.DataDir, o.Store, o.MetaFS = d.dir, d.store, d.mfs
	return o
}

// powerCut cuts the power under f, which must not be used afterwards. With
// rng nil everything not synced is lost (the most a cut can lose); else a
// random subset of the unsynced segment writes survives, torn at random.
//
// Pebble is cut first, then the store: a commit syncs the segments before
// its Pebble batch, so a batch synced before the first cut had its
// segments synced before the second, and the two cuts together are a
// state the disk could really be in. What f does after the cut (its
// goroutines stop, Pebble and the log are closed, which syncs) changes
// nothing that reopening sees.
func (d *pcDisk) powerCut(f *FS, rng *rand.Rand) {
	d.mfs.SetIgnoreSyncs(true)
	if rng == nil {
		d.store = d.store.Crash()
	} else {
		d.store = d.store.CrashRandom(rng.Uint64())
	}
	mCrash(f)
	d.mfs.ResetToSyncedState()
	d.mfs.SetIgnoreSyncs(false)
	d.cuts++
}

func (d *pcDisk) String() string { return fmt.Sprintf("power-cut disk (direct %v)", d.direct) }

// crashDisk is where a crash test keeps its FS: a data dir with a MemStore,
// where a crash is a process kill (crash), or a pcDisk, where it is a power
// cut. Tests that crash run on both (forCrashDisks).
type crashDisk struct {
	dir   string
	store blocks.Store
	pc    *pcDisk
	rng   *rand.Rand // power cut at random (pcDisk only); nil: lose everything unsynced
}

// forCrashDisks runs fn on a process-kill disk, a power-cut disk that
// loses everything unsynced, and one (direct: staged chunks) cut at random.
func forCrashDisks(t *testing.T, fn func(t *testing.T, d *crashDisk)) {
	t.Run("kill", func(t *testing.T) {
		fn(t, &crashDisk{dir: t.TempDir(), store: blocks.NewMemStore()})
	})
	t.Run("powercut", func(t *testing.T) {
		fn(t, &crashDisk{pc: newPCDisk(t, false)})
	})
	t.Run("powercut-random-direct", func(t *testing.T) {
		seed := rand.Uint64()
		t.Logf("cut seed %d", seed)
		fn(t, &crashDisk{pc: newPCDisk(t, true), rng: rand.New(rand.NewPCG(seed, 1))})
	})
}

func (d *crashDisk) options(o Options) Options {
	if d.pc != nil {
		return d.pc.options(o)
	}
	o.DataDir, o.Store = d.dir, d.store
	return o
}

// Store is the store the FS opened next will use.
func (d *crashDisk) Store() blocks.Store {
	if d.pc != nil {
		return d.pc.store
	}
	return d.store
}

// crash drops f: a process kill or a power cut.
func (d *crashDisk) crash(f *FS) {
	if d.pc != nil {
		d.pc.powerCut(f, d.rng)
		return
	}
	crash(f)
}

// checkClean runs Check on the data dir (closed) and requires no problem.
func (d *crashDisk) checkClean(t *testing.T) {
	t.Helper()
	rep, err := Check(d.options(Options{Logger: log.New(io.Discard, "", 0), SegmentBlocks: 64}))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || rep.CorruptBlocks != 0 || rep.MissingObjects != 0 {
		t.Fatalf("check: %+v %v", rep, rep.Problems)
	}
}

// TestPowerCutKeepsFsynced: what fsync acknowledged is there after a power
// cut, whole, and nothing written after it; on both store paths, with and
// without the write-back cache, over a cut that loses everything unsynced
// and cuts that keep any part of it. The file has a size before the first
// write (as after qemu-img create): the first rounds' writes are
// overwrites, which the cache holds until the fsync writes them out, the
// later ones extend the file (not cached). With the segment fdatasync or
// the metadata sync of a commit deleted, or an fsync that does not write
// its volume's cache out, this fails.
func TestPowerCutKeepsFsynced(t *testing.T) {
	for _, direct := range []bool{false, true} {
		for _, wcache := range []int64{-1, 64 << 20} {
			t.Run(fmt.Sprintf("direct=%v,wcache=%v", direct, wcache > 0), func(t *testing.T) {
				d := newPCDisk(t, direct)
				opts := d.options(Options{Logger: log.New(io.Discard, "", 0), SegmentBlocks: 64,
					WriteCache: wcache, CommitInterval: 1 << 40, CompactInterval: -1})
				f, err := Open(opts)
				if err != nil {
					t.Fatal(err)
				}
				a := create(t, f, "a")
				want := make([]byte, 300*BlockSize)
				fsynced := 64 * BlockSize
				if err := f.Truncate(a, uint64(fsynced)); err != nil {
					t.Fatal(err)
				}
				cachedRounds := 0
				for round := range 8 {
					// Overwrites and an extension, unaligned edges included.
					off := round * 37 * BlockSize / 3
					p := bytes.Repeat([]byte{byte(round + 1)}, 40*BlockSize+round*1000)
					if _, err := f.WriteAt(a, p, int64(off)); err != nil {
						t.Fatal(err)
					}
					copy(want[off:], p)
					fsynced = max(fsynced, off+len(p))
					if wcache > 0 && f.dirtyPages(a) > 0 {
						cachedRounds++
					}
					if err := f.Fsync(a); err != nil {
						t.Fatal(err)
					}
					for _, pos := range []int64{0, 40 * BlockSize, 200 * BlockSize} { // not fsynced
						if _, err := f.WriteAt(a, bytes.Repeat([]byte{0xee}, 3*BlockSize), pos); err != nil {
							t.Fatal(err)
						}
					}
					var rng *rand.Rand
					if round%2 == 1 {
						rng = rand.New(rand.NewPCG(uint64(round), 2))
					}
					d.powerCut(f, rng)
					opts = d.options(opts)
					if f, err = Open(opts); err != nil {
						t.Fatalf("round %d: open after the power cut: %v", round, err)
					}
					got := make([]byte, len(want))
					n, err := f.ReadAt(a, got, 0)
					if err != nil {
						t.Fatalf("round %d: read after the power cut: %v", round, err)
					}
					if n != fsynced {
						t.Fatalf("round %d: size %d after the power cut, fsync acknowledged %d", round, n, fsynced)
					}
					if !bytes.Equal(got[:n], want[:n]) {
						t.Fatalf("round %d: after the power cut the file is not what fsync acknowledged", round)
					}
				}
				if wcache > 0 && cachedRounds < 2 {
					t.Fatalf("only %d rounds' writes were cached: the test does not exercise the cache", cachedRounds)
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}
