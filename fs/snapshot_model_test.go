package fs

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"maps"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/meta"
)

// TestSnapshotModel runs a long random sequence of writes, punches, zero
// ranges, truncates, copy_file_range, snapshots (some while another
// goroutine writes the file), rollbacks, clones of files and snapshots,
// renames, unlinks (some while the file is open), compactions, fsyncs,
// clean remounts and crashes against the fs package and against a trivial
// in-memory model, and requires every read to agree: after each op that
// changes a file a random range of it, and periodically every file and
// every snapshot in full, with Describe and Usage checked against what the
// model can tell. Meanwhile another goroutine reads snapshots (immutable,
// so checkable at any moment) and files. A crash returns to the last
// commit, and what a commit holds of each file follows docs/write-cache.md
// "Per-volume fsync": an fsync of a file makes that file certain (all of
// it, as it was then); remount, snapshot create/delete/rollback and clone
// make every file certain (compaction and a refused snapshot op may or may
// not have); any commit (another file's fsync included, unless it wrote
// an fsync journal record instead of committing) also holds what the
// other files had in the trees then. So after a crash each file has the
// size it had at the last commit and each block holds its value at the
// file's last certain point or that of a later write to it, no older than
// what had reached the tree at once (an extending write, a punch or
// truncate, copy_file_range's share, a flush of the volume: fhist). A file
// no commit has touched since its certain point is exactly as it was
// there; snapshots are exactly as taken. Namespace changes survive a crash
// (they are in Pebble's log when they return, and the simulated crash is a
// process kill). At the end the data dir must pass Check, compaction must
// have moved something, and some crash must have kept a file newer than
// its last certain point.
//
// Knobs (environment):
//
//	VAFS_SEED=n        replay a run (the seed is logged; the op sequence is
//	                   a function of it, the timing of concurrent parts is not)
//	VAFS_OPS=n         length of the run (default 10000)
//	VAFS_SEGBLOCKS=n   records per segment (default 64: segments seal often)
//	VAFS_READER=0      no concurrent reader (then only opSnapWhileWriting
//	                   is not deterministic)
//	VAFS_BACKGROUND=1  the committer and the compactor run every few ms (a
//	                   crash may then return to a commit after any op
//	                   since the last certain commit, or between two of
//	                   the writes of a snapshot-while-writing)
//	VAFS_WCACHE=0      no write-back cache (fs/wcache.go): every write
//	                   goes to the log at once
//	VAFS_MINIMIZE=1    shrink a failing sequence and log it as a Go literal
//	                   for a focused test (runModelOps)
func TestSnapshotModel(t *testing.T) { runModelTest(t, 10000, nil) }

// TestSnapshotModelPowerCut is TestSnapshotModel where every crash is a
// power cut (issue 11 item 8): Pebble on a strict vfs.MemFS and the
// segments on a blocks.PowerCutStore, so what was not synced is lost:
// unsynced segment bytes and names (all of them, or a random part kept,
// torn), Pebble batches after its last sync, namespace changes included.
// After every cut each file must be as of a commit point (as
// TestSnapshotModel says, with the namespace as of any namespace op
// since), and crashes
// are five times as frequent. The segment files are DirectFiles (the
// staged-chunk path of the real store) unless the seed is a multiple of 3
// or VAFS_PC_DIRECT=0 (=1: always). Deleting the segment fdatasync or the
// sync of the commit's Pebble batch fails it. Default 2500 ops; the knobs
// of TestSnapshotModel apply.
func TestSnapshotModelPowerCut(t *testing.T) {
	weights := opWeights
	weights[opCrash] *= 5
	runModelTest(t, 2500, &weights)
}

// runModelTest is TestSnapshotModel (weights nil) or
// TestSnapshotModelPowerCut (weights: its op weights).
func runModelTest(t *testing.T, defaultOps int, powerCut *[numOps]int) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("VAFS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("VAFS_SEED: %v", err)
		}
		seed = v
	}
	nops := defaultOps
	if s := os.Getenv("VAFS_OPS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("VAFS_OPS: %v", err)
		}
		nops = v
	}
	t.Logf("seed %d, %d ops (replay: VAFS_SEED=%d VAFS_OPS=%d go test -run %s$ ./fs)", seed, nops, seed, nops, t.Name())
	weights := &opWeights
	direct := false
	if powerCut != nil {
		weights = powerCut
		direct = seed%3 != 0
		if v := os.Getenv("VAFS_PC_DIRECT"); v != "" {
			direct = v == "1"
		}
		t.Logf("power cut: segment files are DirectFiles: %v", direct)
	}
	newRun := func() *modelRun {
		r := newModelRun(t)
		if powerCut != nil {
			r.pc = newPCDisk(t, direct)
		}
		return r
	}
	ops := mGenOpsWeighted(seed, nops, weights)
	// Fewer collections: under -race, memory given back and faulted in
	// again (shadow included) is a third of the run's time. A run peaks at
	// about 200 MB this way.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	r := newRun()
	r.background = os.Getenv("VAFS_BACKGROUND") == "1"
	if os.Getenv("VAFS_READER") != "0" {
		r.bg = &bgReader{tick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	}
	start := time.Now()
	err := r.run(ops)
	t.Logf("%v: %s", time.Since(start).Round(time.Millisecond), r.summary())
	if r.bg != nil {
		t.Logf("concurrent reader: %d reads", r.bg.reads)
	}
	if err != nil {
		var fe *stepError
		if errors.As(err, &fe) {
			t.Logf("history before the failure:\n%s", strings.Join(fe.history, "\n"))
			t.Logf("engine log:\n%s", r.logTail())
			if os.Getenv("VAFS_MINIMIZE") != "" {
				// Minimizing runs without the concurrent reader and the
				// background work, so that a run is (nearly) a function
				// of its ops.
				fails := func(c []mop) bool { return newRun().run(c) != nil }
				if !fails(ops[:fe.step+1]) {
					t.Logf("minimize: the failure does not reproduce without the concurrent reader and background work")
				} else {
					small := mMinimize(ops[:fe.step+1], fails, 3000, t.Logf)
					t.Logf("minimized to %d ops; error: %v\n%s", len(small), newRun().run(small), mGoLiteral(small))
				}
			}
		}
		t.Fatalf("seed %d: %v", seed, err)
	}
	if r.compactCalls > 0 && r.compactUnsupported == r.compactCalls {
		t.Errorf("fs.Compact returned ErrNotSupported all %d times: compaction is not implemented", r.compactCalls)
	} else if r.moved == 0 {
		t.Errorf("compaction ran %d times and never moved a block: nothing exercised it", r.compactCalls)
	}
	if r.snapsCreated == 0 || r.rollbacks == 0 || r.clones == 0 || r.crashes == 0 {
		t.Errorf("the run exercised too little: %s", r.summary())
	}
	if r.crashNewer == 0 {
		// Per-volume fsync: a commit (another file's fsync) holds what a
		// file had in the trees; the run must have seen a crash keep it.
		t.Errorf("no crash kept a file newer than its last certain point: %s", r.summary())
	}
	if r.pc != nil && r.pc.cuts != r.crashes {
		t.Errorf("%d crashes but %d power cuts", r.crashes, r.pc.cuts)
	}
}

// runModelOps runs a fixed op sequence (a minimized repro) and fails the
// test with its history if the engine disagrees with the model.
func runModelOps(t *testing.T, ops []mop) {
	t.Helper()
	r := newModelRun(t)
	if err := r.run(ops); err != nil {
		var fe *stepError
		if errors.As(err, &fe) {
			t.Logf("history:\n%s", strings.Join(fe.history, "\n"))
		}
		t.Fatal(err)
	}
}

// TestSnapshotModelCommitBetweenWrites is what VAFS_BACKGROUND=1 hit at
// random: a commit that lands between two writes of a
// snapshot-while-writing, after its snapshots, commits the file as of that
// write, neither torn nor with a later write, and a crash returns the file
// there (a state the model once did not allow: it knew only the state the
// last snapshot froze and the state after every write). The commit is a
// global one (Commit) the model knows of: the file must be exactly as of
// that write.
func TestSnapshotModelCommitBetweenWrites(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		r := newModelRun(t)
		r.commitBeforeLastWrite = true
		if err := r.run([]mop{{K: opSnapWhileWriting, S: seed}, {K: opCrash, S: seed}}); err != nil {
			var fe *stepError
			if errors.As(err, &fe) {
				t.Logf("history:\n%s", strings.Join(fe.history, "\n"))
			}
			t.Fatalf("seed %d: %v", seed, err)
		}
		if r.crashMidWrites != 1 {
			t.Fatalf("seed %d: the crash returned to no state between the writes (%s)", seed, r.summary())
		}
	}
}

// Sizes are capped so that a run stays fast under -race.
const (
	mSpace    = 1 << 20 // writes start below this; files stay under ~1.5 MiB
	mFar      = 8 << 20 // but small writes and truncates reach this far (a tree of two levels)
	mMaxFiles = 6
	mNames    = 8 // file names f0..f7: clones onto an existing name are common
	mSnapNms  = 5 // snapshot names s0..s4 per file
	mMaxSnaps = 3
)

type mfile struct {
	ino   uint64
	d     mdata
	snaps []msnap // oldest first
}

type msnap struct {
	name string
	id   uint64
	d    mdata
}

type modelRun struct {
	t     testing.TB
	dir   string
	store blocks.Store
	opts  Options
	f     *FS
	logb  *lockedBuf

	files map[string]*mfile
	// orphans are files unlinked while open (a handle is held): readable
	// until released, reclaimed by the next remount or crash.
	orphans []*mfile
	// durable lists the commits that a crash may return to, oldest first:
	// the last certain commit, then every point that may or may not have
	// committed since (and, power cut, namespace changes on top of them).
	// What each file may be at a commit is its fhist's to say.
	durable []mpoint
	// now is the model's clock: it ticks for every op, and for every state
	// of a snapshot-while-writing's file.
	now int
	// hists: each file's history since its last certain point, by inode
	// (files unlinked or renamed over since the last certain commit
	// included: a power cut may bring them back).
	hists     map[uint64]*fhist
	goneSnaps []uint64
	seenIDs   map[uint64]bool

	bg *bgReader // nil: no concurrent reader (replays are deterministic without it)
	// pc: every crash is a power cut (TestSnapshotModelPowerCut): Pebble
	// on a strict MemFS, segments on a blocks.PowerCutStore, and what
	// was not synced is lost, namespace changes included. nil: a crash is
	// a process kill.
	pc *pcDisk
	// background: the committer and the compactor run every few ms, so
	// any op may have been committed by them.
	background bool
	// commitBeforeLastWrite (TestSnapshotModelCommitBetweenWrites): no
	// background timers; instead a snapshot-while-writing's writer waits
	// for the snapshots before its second-to-last write and commits
	// before its last: the commit lands strictly between the state the
	// last snapshot froze and the state after every write.
	commitBeforeLastWrite bool
	step                  int
	hist                  []string
	checkAt               int

	compactCalls, compactUnsupported, compactSegs      int
	moved                                              uint64
	snapsCreated, rollbacks, clones, crashes, remounts int
	busyRefused, errChecks, fullVerifies               int
	crashLater                                         int    // crashes that kept more than the last certain commit
	crashNewer                                         int    // crashes that kept some file newer than its last certain point
	crashMixed                                         int    // crashes that kept some file as none of its states (newer blocks beside older ones)
	crashMidWrites                                     int    // crashes that returned between two writes of a snapshot-while-writing
	crashOldNames                                      int    // power cuts that took namespace changes back
	snapsMidWrites                                     int    // snapshots that froze a file between concurrent writes
	got, want, data                                    []byte // reused buffers
	spent                                              [numOps]time.Duration
}

type stepError struct {
	step    int
	op      mop
	err     error
	history []string
}

func (e *stepError) Error() string {
	return fmt.Sprintf("step %d (%s %#x): %v", e.step, e.op.K, e.op.S, e.err)
}

func (e *stepError) Unwrap() error { return e.err }

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		l.b.Reset()
	}
	return l.b.Write(p)
}

func newModelRun(t testing.TB) *modelRun {
	return &modelRun{t: t, files: map[string]*mfile{}, seenIDs: map[uint64]bool{}, logb: &lockedBuf{}, hists: map[uint64]*fhist{}}
}

func (r *modelRun) summary() string {
	return fmt.Sprintf("%d steps, %d snapshots created (%d amid concurrent writes), %d rollbacks (%d refused busy), %d clones, %d expected errors, "+
		"%d remounts, %d crashes (%d kept more than the last certain commit, %d kept a file newer than its certain point, %d a file as none of its states, %d between the writes of a snapshot-while-writing, %d took namespace changes back), %d full verifies, compact %d calls (%d unsupported) %d segments %d blocks moved",
		r.step, r.snapsCreated, r.snapsMidWrites, r.rollbacks, r.busyRefused, r.clones, r.errChecks, r.remounts, r.crashes, r.crashLater, r.crashNewer, r.crashMixed, r.crashMidWrites, r.crashOldNames,
		r.fullVerifies, r.compactCalls, r.compactUnsupported, r.compactSegs, r.moved) + "; time " + r.timeSpent()
}

// timeSpent says where the time went (the run must stay fast under -race).
func (r *modelRun) timeSpent() string {
	var parts []string
	for k, d := range r.spent {
		if d > 0 {
			parts = append(parts, fmt.Sprintf("%s %v", opKind(k), d.Round(time.Millisecond)))
		}
	}
	return strings.Join(parts, ", ")
}

func (r *modelRun) logTail() string {
	r.logb.mu.Lock()
	defer r.logb.mu.Unlock()
	s := r.logb.b.String()
	if len(s) > 4000 {
		s = "..." + s[len(s)-4000:]
	}
	return s
}

func (r *modelRun) open() error {
	f, err := Open(r.opts)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	r.f = f
	return nil
}

// run executes ops from a fresh data dir; the first disagreement with the
// model (or unexpected error) is returned as a *stepError.
func (r *modelRun) run(ops []mop) (err error) {
	dir, err := os.MkdirTemp(modelTempBase(), "vafs-model-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	r.dir = dir
	// Segments in memory: fs must not import cachessd, even in tests
	// (imports_test.go); the integration suite runs the real store.
	r.store = blocks.NewMemStore()
	segBlocks := uint32(64)
	if v, err := strconv.ParseUint(os.Getenv("VAFS_SEGBLOCKS"), 10, 32); err == nil && v > 0 {
		segBlocks = uint32(v)
	}
	r.opts = Options{DataDir: dir, Store: r.store, Logger: log.New(r.logb, "", 0),
		CommitInterval: time.Hour, CompactInterval: -1, SegmentBlocks: segBlocks}
	if r.pc != nil {
		r.opts = r.pc.options(r.opts)
		r.store = r.pc.store
	}
	if r.background && !r.commitBeforeLastWrite {
		r.opts.CommitInterval, r.opts.CompactInterval, r.opts.DirtyExpire = 3*time.Millisecond, 10*time.Millisecond, 3*time.Millisecond
	} else {
		// No background commit at all: the committer ticks every
		// min(CommitInterval, DirtyExpire), and the host's
		// dirty_expire (30 s) would let one commit at a moment the
		// model does not know of in a long (-race) run.
		r.opts.DirtyExpire = time.Hour
	}
	if os.Getenv("VAFS_WCACHE") == "0" {
		r.opts.WriteCache = -1
	}
	if err := r.open(); err != nil {
		return err
	}
	defer func() {
		r.bg.Stop()
		if r.f != nil {
			mCrash(r.f) // a failed run: release the data dir without committing
		}
	}()
	a, err := r.f.Create(meta.RootIno, "f0", 0o644, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("create f0: %w", err)
	}
	r.files["f0"] = &mfile{ino: a.Ino}
	if r.pc != nil {
		// A power cut may lose a create: commit the first file, so that a
		// crash never leaves the model without one.
		if err := r.f.Commit(); err != nil {
			return fmt.Errorf("commit f0: %w", err)
		}
	}
	r.committed()
	if r.bg != nil {
		r.bg.f = r.f
		go r.bg.run(rand.New(rand.NewPCG(uint64(len(ops)), 99)))
		defer r.bg.Stop()
	}
	for i, o := range ops {
		r.step = i
		if len(r.hist) >= 40 {
			r.hist = r.hist[1:]
		}
		r.hist = append(r.hist, fmt.Sprintf("%5d %s %#x", i, o.K, o.S))
		t0 := time.Now()
		r.now++
		err := r.do(o)
		r.recordAll()
		r.spent[o.K] += time.Since(t0)
		if err == nil && r.bg != nil {
			err = r.syncReader()
		}
		if err == nil && r.background {
			r.maybeCommitted(false)
		}
		if err != nil {
			return &stepError{step: i, op: o, err: err, history: r.hist}
		}
	}
	r.step = len(ops)
	if err := r.verifyAll(true, true); err != nil {
		return &stepError{step: len(ops) - 1, err: fmt.Errorf("final verify: %w", err), history: r.hist}
	}
	r.bg.Stop()
	f := r.f
	r.f = nil
	if err := f.Close(); err != nil {
		return fmt.Errorf("final close: %w", err)
	}
	if err := r.check(); err != nil {
		return &stepError{step: len(ops) - 1, err: fmt.Errorf("final check: %w", err), history: r.hist}
	}
	return nil
}

// modelTempBase is where run puts its data dir: VAFS_MODEL_DIR, else
// /dev/shm when it has room (the run fsyncs on every commit point and
// reopens Pebble often; on a disk that is most of its time, and a crash is
// simulated in-process, so the medium changes nothing the test sees), else
// the usual temp dir.
func modelTempBase() string {
	if d := os.Getenv("VAFS_MODEL_DIR"); d != "" {
		return d
	}
	var st syscall.Statfs_t
	if syscall.Statfs("/dev/shm", &st) == nil && st.Bavail*uint64(st.Bsize) > 2<<30 {
		if d, err := os.MkdirTemp("/dev/shm", "probe-"); err == nil {
			os.Remove(d)
			return "/dev/shm"
		}
	}
	return ""
}

// syncReader hands the concurrent reader the model's snapshots and files.
func (r *modelRun) syncReader() error {
	var snaps []bgSnap
	var inos []uint64
	for _, mf := range append(slices.Collect(maps.Values(r.files)), r.orphans...) {
		inos = append(inos, mf.ino)
		for _, s := range mf.snaps {
			snaps = append(snaps, bgSnap{id: s.id, what: fmt.Sprintf("snapshot %s of ino %d (id %d)", s.name, mf.ino, s.id), d: s.d})
		}
	}
	return r.bg.sync(snaps, inos)
}

// note adds detail to the current op's history line.
func (r *modelRun) note(format string, args ...any) {
	r.hist[len(r.hist)-1] += " " + fmt.Sprintf(format, args...)
}

// names lists the model's files, sorted, so picks are deterministic.
func (r *modelRun) names() []string {
	ns := make([]string, 0, len(r.files))
	for n := range r.files {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

func (r *modelRun) pick(rng *rand.Rand) (string, *mfile) {
	ns := r.names()
	if len(ns) == 0 {
		return "", nil
	}
	n := ns[rng.IntN(len(ns))]
	return n, r.files[n]
}

// mpoint is a commit a crash may return to: its time (each file's fhist
// says what the file may be at it) and, when a crash is a power cut, the
// namespace (name -> inode) and each file's snapshots, which a power cut
// can take back too.
type mpoint struct {
	t int
	// exact: the commit flushed every volume (a snapshot op, compaction,
	// remount...): every file is exactly as it was at t.
	exact bool
	names map[string]uint64  // power cut only
	snaps map[uint64][]msnap // power cut only
	// ns: a namespace change on top of a commit point (power cut only);
	// other points are commit points.
	ns bool
}

// point is a commit now as an mpoint.
func (r *modelRun) point(exact bool) mpoint {
	p := mpoint{t: r.now, exact: exact}
	if r.pc != nil {
		p.names, p.snaps = r.namespace()
	}
	return p
}

// recordAll adds every file's content now to its history (if changed).
func (r *modelRun) recordAll() {
	for _, mf := range r.files {
		if h := r.hists[mf.ino]; h != nil {
			h.record(r.now, mf.d, false)
		} else {
			r.hists[mf.ino] = newFHist(r.now, mf.d, false)
		}
	}
}

// created starts a new file's history: empty since now.
func (r *modelRun) created(ino uint64) { r.hists[ino] = newFHist(r.now, mdata{}, false) }

// floor: blocks [from, to) of ino reached the tree now, with their values
// at time t (fhist).
func (r *modelRun) floor(ino uint64, t int, from, to int64) {
	if h := r.hists[ino]; h != nil {
		h.floor(r.now, t, from, to)
	}
}

// flushed: the volume's cache is written to the tree now (SEEK_DATA);
// flushedAll: every volume's (describe, df).
func (r *modelRun) flushed(ino uint64) {
	r.recordAll()
	if r.background {
		// A background commit may land between the op's change and the
		// flush: a commit point there, and the flush a moment later.
		r.maybeCommitted(false)
		r.now++
	}
	r.floor(ino, r.now, 0, allBlocks)
}

func (r *modelRun) flushedAll() {
	for _, mf := range r.files {
		r.flushed(mf.ino)
	}
}

// certain makes ino's content now its certain point.
func (r *modelRun) certain(ino uint64, d mdata) {
	mid := false
	if h := r.hists[ino]; h != nil {
		if last := h.states[len(h.states)-1]; sameData(last.d, d) {
			mid = last.mid
		}
	}
	r.hists[ino] = newFHist(r.now, d, mid)
	r.hists[ino].certain = true
}

func (r *modelRun) namespace() (map[string]uint64, map[uint64][]msnap) {
	names, snaps := make(map[string]uint64, len(r.files)), make(map[uint64][]msnap, len(r.files))
	for n, mf := range r.files {
		names[n] = mf.ino
		snaps[mf.ino] = slices.Clone(mf.snaps)
	}
	return names, snaps
}

// committed: a certain commit that flushed every volume (remount,
// snapshot create/delete/rollback, clone): every file is certain as it is
// now. fsynced: ino's fsync makes that file certain, and may be a commit
// that holds the others as their trees have them, or not (a journal
// record, fs/journal.go): a crash may return to that point or an older
// one, with ino certain at each. maybeCommitted:
// an op that may or may not have committed (a crash may return to either
// side of it); exact if a commit it made flushed every volume
// (compaction, a refused snapshot op), else (the background commit) it
// holds each file as the trees had it.
func (r *modelRun) committed() {
	hists := make(map[uint64]*fhist, len(r.files))
	for _, mf := range r.files {
		r.certain(mf.ino, mf.d)
		hists[mf.ino] = r.hists[mf.ino]
	}
	r.hists = hists // the namespace is certain too: no other file can come back
	r.durable = []mpoint{r.point(true)}
}

func (r *modelRun) fsynced(ino uint64) {
	r.recordAll()
	for _, mf := range r.files {
		if mf.ino == ino {
			r.certain(ino, mf.d)
		}
	}
	// An fsync that wrote a journal record (fs/journal.go) committed no
	// tree: the others may go back to any point since their last certain
	// one; ino is certain at each (fhist.certain).
	r.durable = append(r.durable, r.point(false))
}

func (r *modelRun) maybeCommitted(exact bool) {
	r.recordAll()
	r.durable = append(r.durable, r.point(exact))
}

// nsChanged: a namespace op (create, unlink, rename, the release of a
// file unlinked while open) wrote its Pebble batch without a sync. Under
// a process kill it survives (it is in Pebble's log). A power cut keeps
// it only if something synced Pebble's log after it (a commit, which
// holds the contents as of then too: a point of its own) or Pebble
// flushed its memtable; either way batches land in order, so a cut keeps
// a prefix of them. So the states a cut may return to are every commit
// point since the last certain one, each with the namespace as of any
// namespace op since that point: the contents are the commit point's (a
// file created since is empty there), the names and snapshots are now's
// (snapshots change only in commits, which come with their own point).
func (r *modelRun) nsChanged() {
	if r.pc == nil {
		return
	}
	names, snaps := r.namespace()
	for _, p := range r.durable {
		if !p.ns {
			r.durable = append(r.durable, mpoint{t: p.t, exact: p.exact, names: names, snaps: snaps, ns: true})
		}
	}
}

// expect checks that err is the sentinel want.
func (r *modelRun) expect(err, want error, what string) error {
	r.errChecks++
	if !errors.Is(err, want) {
		return fmt.Errorf("%s: got error %v, want %v", what, err, want)
	}
	return nil
}

func (r *modelRun) do(o mop) error {
	rng := rand.New(rand.NewPCG(o.S, o.S^0x9e3779b97f4a7c15))
	f := r.f
	switch o.K {
	case opCreate:
		name := fmt.Sprintf("f%d", rng.IntN(mNames))
		r.note("%s", name)
		if r.files[name] != nil {
			_, err := f.Create(meta.RootIno, name, 0o644, 0, 0, 0)
			return r.expect(err, ErrExists, "create over an existing file")
		}
		if len(r.files) >= mMaxFiles {
			return nil
		}
		a, err := f.Create(meta.RootIno, name, 0o644, 0, 0, 0)
		if err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		r.files[name] = &mfile{ino: a.Ino}
		r.created(a.Ino)
		r.nsChanged()
		return r.readCheck(name, rng)

	case opUnlink:
		if rng.IntN(8) == 0 {
			name := fmt.Sprintf("f%d", rng.IntN(mNames))
			if r.files[name] == nil {
				r.note("missing %s", name)
				return r.expect(f.Unlink(meta.RootIno, name), ErrNotFound, "unlink of a missing name")
			}
		}
		name, mf := r.pick(rng)
		if mf == nil || len(r.files) == 1 {
			return nil
		}
		r.note("%s (ino %d, %d snapshots)", name, mf.ino, len(mf.snaps))
		open := rng.IntN(3) == 0 && len(r.orphans) < 2
		if open { // unlinked while open: lives on until released
			r.note("while open")
			if _, err := f.Open(mf.ino, rng.IntN(2) == 0); err != nil {
				return fmt.Errorf("open %s: %w", name, err)
			}
		}
		if err := f.Unlink(meta.RootIno, name); err != nil {
			return fmt.Errorf("unlink %s: %w", name, err)
		}
		delete(r.files, name)
		r.nsChanged()
		if open {
			r.orphans = append(r.orphans, mf)
			return r.orphanCheck(mf)
		}
		return r.gone(name, mf)

	case opRelease:
		if len(r.orphans) == 0 {
			return nil
		}
		i := rng.IntN(len(r.orphans))
		mf := r.orphans[i]
		r.note("ino %d", mf.ino)
		if err := r.orphanCheck(mf); err != nil {
			return err
		}
		// Open's write flag is not remembered: a write release of a read
		// open only fails to decrement writers, which nothing here reads.
		if err := f.Release(mf.ino, false); err != nil {
			return fmt.Errorf("release of unlinked ino %d: %w", mf.ino, err)
		}
		r.orphans = slices.Delete(r.orphans, i, i+1)
		// No nsChanged: whether a cut keeps this batch or not, a reopen
		// reclaims the file (its unlink is what a cut may lose).
		return r.gone(fmt.Sprintf("released ino %d", mf.ino), mf)

	case opRename:
		src, mf := r.pick(rng)
		dst := fmt.Sprintf("f%d", rng.IntN(mNames))
		if dst == src {
			return nil
		}
		target := r.files[dst]
		flags := uint32(0)
		switch rng.IntN(6) {
		case 0:
			flags = RenameNoReplace
		case 1:
			if target != nil {
				flags = RenameExchange
			}
		}
		r.note("%s -> %s flags %d (target exists: %v)", src, dst, flags, target != nil)
		err := f.Rename(meta.RootIno, src, meta.RootIno, dst, flags)
		if target != nil && flags == RenameNoReplace {
			return r.expect(err, ErrExists, "rename NOREPLACE onto an existing name")
		}
		if err != nil {
			return fmt.Errorf("rename %s -> %s flags %d: %w", src, dst, flags, err)
		}
		if flags == RenameExchange {
			r.files[src], r.files[dst] = target, mf
			r.nsChanged()
			if err := r.readCheck(src, rng); err != nil {
				return err
			}
		} else {
			delete(r.files, src)
			r.files[dst] = mf
			r.nsChanged()
		}
		if err := r.readCheck(dst, rng); err != nil {
			return err
		}
		if err := r.listCheck(dst, mf); err != nil {
			return err
		}
		if target != nil && flags != RenameExchange {
			return r.gone("replaced "+dst, target)
		}
		return nil

	case opCopyRange:
		sname, src := r.pick(rng)
		dname, dst := r.pick(rng)
		var soff, doff, n int64
		switch rng.IntN(3) {
		case 0: // whole blocks: shared, not copied
			soff = BlockSize * rng.Int64N(src.d.size/BlockSize+2)
			doff = BlockSize * rng.Int64N(mSpace/BlockSize)
			n = BlockSize * (1 + rng.Int64N(128))
		case 1: // the same misalignment: edges copied, middle shared
			soff = rng.Int64N(src.d.size + BlockSize)
			doff = BlockSize*rng.Int64N(mSpace/BlockSize) + soff%BlockSize
			n = 1 + rng.Int64N(512<<10)
		default:
			soff, doff, n = rng.Int64N(src.d.size+BlockSize), rng.Int64N(mSpace), 1+rng.Int64N(256<<10)
		}
		if src == dst && soff < doff+n && doff < soff+n {
			return nil // copy_file_range refuses overlapping ranges of one file
		}
		want := max(0, min(n, src.d.size-soff))
		r.note("%s [%d, +%d) -> %s at %d (copies %d)", sname, soff, n, dname, doff, want)
		k, err := f.CopyRange(src.ino, uint64(soff), dst.ino, uint64(doff), uint64(n))
		if err != nil || k != uint64(want) {
			return fmt.Errorf("copy range %s [%d, +%d) -> %s at %d: %d, %v; want %d", sname, soff, n, dname, doff, k, err, want)
		}
		// The copy flushed both volumes first (their states before the
		// op, time now-1, are in the trees); the blocks it shares and
		// those wholly past dst's old end (written by writes that extend
		// it) reach dst's tree at once.
		r.floor(src.ino, r.now-1, 0, allBlocks)
		r.floor(dst.ino, r.now-1, 0, allBlocks)
		if want > 0 {
			oldEnd := (dst.d.size + BlockSize - 1) / BlockSize
			p := make([]byte, want)
			src.d.read(p, soff)
			dst.d.write(doff, p)
			r.floor(dst.ino, r.now, max(doff/BlockSize, oldEnd), (doff+want+BlockSize-1)/BlockSize)
			if soff%BlockSize == doff%BlockSize && want >= 2*BlockSize { // as CopyRange: the aligned middle is shared
				head := (BlockSize - soff%BlockSize) % BlockSize
				r.floor(dst.ino, r.now, (doff+head)/BlockSize, (doff+head)/BlockSize+(want-head)/BlockSize)
			}
		}
		if r.background {
			// A copy is several locked steps: a background commit may
			// land between them. Only the end is a state a crash may
			// return to (for dst, the only file it changes).
			if err := f.Fsync(dst.ino); err != nil {
				return fmt.Errorf("fsync: %w", err)
			}
			r.fsynced(dst.ino)
		}
		return r.readCheck(dname, rng)

	case opWrite:
		name, mf := r.pick(rng)
		if mf == nil {
			return nil
		}
		var off, n int64
		switch m := rng.IntN(40); {
		case m < 22: // small, mostly unaligned, sometimes appending, sometimes far
			off = rng.Int64N(mSpace)
			switch rng.IntN(8) {
			case 0, 1:
				off = max(0, mf.d.size-rng.Int64N(2*BlockSize))
			case 2:
				off = rng.Int64N(mFar) // past the first leaf: a taller tree
			}
			n = 1 + rng.Int64N(3*BlockSize)
		case m < 30: // aligned
			off = BlockSize * rng.Int64N(mSpace/BlockSize)
			n = BlockSize * (1 + rng.Int64N(16))
		case m < 36: // medium, unaligned
			off = rng.Int64N(mSpace)
			n = 1 + rng.Int64N(64<<10)
		case m < 38: // large, unaligned
			off = rng.Int64N(mSpace)
			n = 128<<10 + rng.Int64N(512<<10)
		default: // large, aligned
			off = BlockSize * rng.Int64N(mSpace/BlockSize)
			n = BlockSize * (32 + rng.Int64N(128))
		}
		r.note("%s [%d, +%d)", name, off, n)
		if int64(cap(r.data)) < n {
			r.data = make([]byte, max(n, 640<<10))
		}
		p := r.data[:n]
		mFill(p, o.S)
		if k, err := f.WriteAt(mf.ino, p, off); err != nil || k != len(p) {
			return fmt.Errorf("write %s [%d, +%d): %d, %v", name, off, n, k, err)
		}
		if off+n > mf.d.size { // extends the file: not cached, in the tree at once with the size
			r.floor(mf.ino, r.now, off/BlockSize, (off+n+BlockSize-1)/BlockSize)
		}
		mf.d.write(off, p)
		return r.readCheck(name, rng)

	case opPunch, opZero:
		name, mf := r.pick(rng)
		if mf == nil {
			return nil
		}
		off := rng.Int64N(max(mf.d.size, 1) + BlockSize)
		if rng.IntN(3) == 0 {
			off = off / BlockSize * BlockSize
		}
		n := 1 + rng.Int64N(3*BlockSize)
		if rng.IntN(2) == 0 {
			n = 1 + rng.Int64N(256<<10)
		}
		mode := uint32(FallocPunchHole | FallocKeepSize)
		if o.K == opZero {
			mode = FallocZeroRange
			if rng.IntN(2) == 0 {
				mode |= FallocKeepSize
			}
		}
		r.note("%s mode %#x [%d, +%d)", name, mode, off, n)
		if err := f.Fallocate(mf.ino, mode, uint64(off), uint64(n)); err != nil {
			return fmt.Errorf("fallocate %s mode %#x [%d, +%d): %w", name, mode, off, n, err)
		}
		if mode&FallocKeepSize == 0 && off+n > mf.d.size {
			mf.d.resize(off + n)
		}
		mf.d.zero(off, n)
		r.floor(mf.ino, r.now, (off+BlockSize-1)/BlockSize, (off+n)/BlockSize) // whole blocks: punched in the tree
		return r.readCheck(name, rng)

	case opTruncate:
		name, mf := r.pick(rng)
		if mf == nil {
			return nil
		}
		switch m := rng.IntN(10); {
		case m < 7:
			size := rng.Int64N(mSpace + 256<<10)
			switch rng.IntN(8) {
			case 2:
				size = rng.Int64N(mFar)
			case 0:
				size = size / BlockSize * BlockSize
			case 1:
				size = max(0, mf.d.size+rng.Int64N(2*BlockSize)-BlockSize) // near the current size
			}
			r.note("%s to %d (from %d)", name, size, mf.d.size)
			if err := f.Truncate(mf.ino, uint64(size)); err != nil {
				return fmt.Errorf("truncate %s to %d: %w", name, size, err)
			}
			if size < mf.d.size { // the whole blocks past it are punched in the tree
				r.floor(mf.ino, r.now, (size+BlockSize-1)/BlockSize, allBlocks)
			}
			mf.d.resize(size)
		default: // fallocate without punch: extends unless KEEP_SIZE, never changes data
			off, n := rng.Int64N(mSpace), 1+rng.Int64N(256<<10)
			mode := uint32(0)
			if m == 9 {
				mode = FallocKeepSize
			}
			r.note("%s fallocate mode %#x [%d, +%d)", name, mode, off, n)
			if err := f.Fallocate(mf.ino, mode, uint64(off), uint64(n)); err != nil {
				return fmt.Errorf("fallocate %s mode %#x [%d, +%d): %w", name, mode, off, n, err)
			}
			if mode == 0 && off+n > mf.d.size {
				mf.d.resize(off + n)
			}
		}
		return r.readCheck(name, rng)

	case opSnapCreate:
		name, mf := r.pick(rng)
		if mf == nil {
			return nil
		}
		sn := fmt.Sprintf("s%d", rng.IntN(mSnapNms))
		r.note("%s@%s", name, sn)
		if mf.snapIndex(sn) >= 0 {
			_, err := f.SnapshotCreate(mf.ino, sn)
			r.maybeCommitted(true)
			return r.expect(err, ErrExists, "snapshot create of an existing name")
		}
		if len(mf.snaps) >= mMaxSnaps { // make room: delete the oldest first
			old := mf.snaps[0]
			r.note("(deleting %s first)", old.name)
			if err := f.SnapshotDelete(mf.ino, old.name); err != nil {
				return fmt.Errorf("snapshot delete %s@%s: %w", name, old.name, err)
			}
			r.dropSnap(mf, 0)
			r.committed()
		}
		s, err := f.SnapshotCreate(mf.ino, sn)
		if err != nil {
			return fmt.Errorf("snapshot create %s@%s: %w", name, sn, err)
		}
		r.snapsCreated++
		if s.Name != sn || s.Vol != mf.ino || s.Size != uint64(mf.d.size) || s.Created.IsZero() {
			return fmt.Errorf("snapshot create %s@%s returned %+v; want name %s vol %d size %d and a creation time", name, sn, s, sn, mf.ino, mf.d.size)
		}
		if s.ID == 0 || r.seenIDs[s.ID] {
			return fmt.Errorf("snapshot create %s@%s: id %d is zero or was used before", name, sn, s.ID)
		}
		r.seenIDs[s.ID] = true
		mf.snaps = append(mf.snaps, msnap{name: sn, id: s.ID, d: mf.d.clone()})
		r.committed()
		if rng.IntN(3) == 0 {
			if err := r.describeCheck(name, mf, true); err != nil {
				return err
			}
		}
		// Writing the file after the snapshot must not change it: the next
		// write's read-back and the periodic verifies check that.
		return r.snapCheck(name, mf, len(mf.snaps)-1, rng)

	case opSnapDelete:
		name, mf := r.pick(rng)
		if mf == nil {
			return nil
		}
		if len(mf.snaps) == 0 || rng.IntN(6) == 0 {
			sn := fmt.Sprintf("s%d", rng.IntN(mSnapNms))
			if mf.snapIndex(sn) < 0 {
				r.note("missing %s@%s", name, sn)
				err := f.SnapshotDelete(mf.ino, sn)
				r.maybeCommitted(true)
				return r.expect(err, ErrNotFound, "snapshot delete of a missing name")
			}
		}
		if len(mf.snaps) == 0 {
			return nil
		}
		i := rng.IntN(len(mf.snaps))
		r.note("%s@%s", name, mf.snaps[i].name)
		if err := f.SnapshotDelete(mf.ino, mf.snaps[i].name); err != nil {
			return fmt.Errorf("snapshot delete %s@%s: %w", name, mf.snaps[i].name, err)
		}
		id := mf.snaps[i].id
		r.dropSnap(mf, i)
		r.committed()
		if _, err := f.SnapshotByID(id); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("deleted snapshot id %d: SnapshotByID gives %v, want ErrNotFound", id, err)
		}
		return r.listCheck(name, mf)

	case opRollback:
		name, mf := r.pick(rng)
		if mf == nil {
			return nil
		}
		if len(mf.snaps) == 0 || rng.IntN(8) == 0 {
			sn := fmt.Sprintf("s%d", rng.IntN(mSnapNms))
			if mf.snapIndex(sn) < 0 {
				r.note("missing %s@%s", name, sn)
				err := f.SnapshotRollback(mf.ino, sn, rng.IntN(2) == 0)
				r.maybeCommitted(true)
				if err := r.expect(err, ErrNotFound, "rollback to a missing snapshot"); err != nil {
					return err
				}
				return r.readCheck(name, rng)
			}
		}
		if len(mf.snaps) == 0 {
			return nil
		}
		s := mf.snaps[rng.IntN(len(mf.snaps))]
		r.note("%s to %s (size %d -> %d)", name, s.name, mf.d.size, s.d.size)
		force := false
		if rng.IntN(4) == 0 { // open for writing: refused unless forced
			if _, err := f.Open(mf.ino, true); err != nil {
				return fmt.Errorf("open %s: %w", name, err)
			}
			err := f.SnapshotRollback(mf.ino, s.name, false)
			r.maybeCommitted(true)
			if err := r.expect(err, ErrBusy, "rollback of a file open for writing"); err != nil {
				return err
			}
			r.busyRefused++
			if err := r.readCheck(name, rng); err != nil { // unchanged
				return err
			}
			force = rng.IntN(2) == 0
			if !force {
				if err := f.Release(mf.ino, true); err != nil {
					return fmt.Errorf("release %s: %w", name, err)
				}
			}
		}
		if err := f.SnapshotRollback(mf.ino, s.name, force); err != nil {
			return fmt.Errorf("rollback %s to %s (force %v): %w", name, s.name, force, err)
		}
		if force {
			if err := f.Release(mf.ino, true); err != nil {
				return fmt.Errorf("release %s: %w", name, err)
			}
		}
		r.rollbacks++
		mf.d = s.d.clone()
		r.committed()
		if rng.IntN(3) == 0 {
			if err := r.describeCheck(name, mf, true); err != nil {
				return err
			}
		}
		return r.readCheck(name, rng)

	case opCloneFile, opCloneSnap:
		dst := fmt.Sprintf("f%d", rng.IntN(mNames))
		name, mf := r.pick(rng)
		if mf == nil {
			return nil
		}
		var src mdata
		var clone func() (Attr, error)
		if o.K == opCloneFile {
			r.note("%s -> %s", name, dst)
			src = mf.d
			clone = func() (Attr, error) { return f.Clone(mf.ino, meta.RootIno, dst) }
		} else {
			if len(mf.snaps) == 0 {
				return nil
			}
			s := mf.snaps[rng.IntN(len(mf.snaps))]
			r.note("%s@%s (id %d) -> %s", name, s.name, s.id, dst)
			src = s.d
			clone = func() (Attr, error) { return f.CloneSnapshot(s.id, meta.RootIno, dst) }
		}
		if r.files[dst] != nil {
			_, err := clone()
			r.maybeCommitted(true)
			if err := r.expect(err, ErrExists, "clone onto an existing name"); err != nil {
				return err
			}
			return r.readCheck(dst, rng) // the existing file is untouched
		}
		if len(r.files) >= mMaxFiles {
			return nil
		}
		a, err := clone()
		if err != nil {
			return fmt.Errorf("clone -> %s: %w", dst, err)
		}
		if a.Size != uint64(src.size) || !a.IsRegular() {
			return fmt.Errorf("clone -> %s: attr size %d mode %o, want a regular file of %d", dst, a.Size, a.Mode, src.size)
		}
		for _, other := range r.files {
			if other.ino == a.Ino {
				return fmt.Errorf("clone -> %s: inode %d is already in use", dst, a.Ino)
			}
		}
		r.clones++
		r.files[dst] = &mfile{ino: a.Ino, d: src.clone()}
		r.committed()
		if rng.IntN(3) == 0 {
			if err := r.describeCheck(dst, r.files[dst], true); err != nil {
				return err
			}
			if err := r.describeCheck(name, mf, o.K == opCloneFile); err != nil {
				return err
			}
		}
		if err := r.readCheck(dst, rng); err != nil {
			return err
		}
		return r.listCheck(dst, r.files[dst])

	case opCompact:
		st, err := f.Compact()
		r.compactCalls++
		if errors.Is(err, ErrNotSupported) {
			r.compactUnsupported++
			return nil
		}
		if err != nil {
			return fmt.Errorf("compact: %w", err)
		}
		r.note("%+v", st)
		r.compactSegs += st.Segments
		r.moved += st.Moved
		r.maybeCommitted(true)
		// Whatever moved must still read the same, in files and snapshots.
		name, mf := r.pick(rng)
		if err := r.fileCheck(name, mf); err != nil {
			return err
		}
		if len(mf.snaps) > 0 {
			return r.snapCheck(name, mf, rng.IntN(len(mf.snaps)), rng)
		}
		return nil

	case opFsync:
		name, mf := r.pick(rng)
		r.note("%s", name)
		if err := f.Fsync(mf.ino); err != nil {
			return fmt.Errorf("fsync: %w", err)
		}
		r.fsynced(mf.ino) // that file is certain; the others are as their trees are
		return nil

	case opRemount:
		if r.bg != nil {
			r.bg.mu.Lock()
			defer func() { r.bg.f = r.f; r.bg.mu.Unlock() }()
		}
		r.f = nil
		if err := f.Close(); err != nil {
			return fmt.Errorf("close: %w", err)
		}
		r.committed()
		r.remounts++
		if rng.IntN(5) == 0 {
			if err := r.check(); err != nil {
				return err
			}
		}
		if err := r.open(); err != nil {
			return err
		}
		if err := r.reclaimed(); err != nil {
			return err
		}
		return r.verifyAll(false, true)

	case opCrash:
		if r.bg != nil {
			r.bg.mu.Lock()
			defer func() { r.bg.f = r.f; r.bg.mu.Unlock() }()
			if r.pc != nil {
				// Judge the reads that failed so far against the model
				// before the cut: a cut may bring back a file or a
				// snapshot they rightly did not find.
				if err := r.syncReader(); err != nil {
					return err
				}
			}
		}
		r.f = nil
		if r.pc != nil {
			var cut *rand.Rand // lose everything unsynced, or keep a random part of it
			if rng.IntN(2) == 0 {
				cut = rng
			}
			r.pc.powerCut(f, cut)
			r.opts = r.pc.options(r.opts)
			r.store = r.pc.store
		} else {
			mCrash(f)
		}
		r.crashes++
		if rng.IntN(5) == 0 {
			if err := r.check(); err != nil { // Check recovers the data dir itself
				return fmt.Errorf("after the crash: %w", err)
			}
		}
		if err := r.open(); err != nil {
			return fmt.Errorf("after the crash: %w", err)
		}
		if err := r.afterCrash(); err != nil {
			return err
		}
		if err := r.reclaimed(); err != nil {
			return err
		}
		return r.verifyAll(false, true) // afterCrash read every file; this checks SEEK_DATA over them

	case opVerify:
		return r.verifyAll(true, true)

	case opSnapWhileWriting:
		return r.snapWhileWriting(o, rng)
	}
	return fmt.Errorf("unknown op %d", o.K)
}

// snapWhileWriting snapshots a file while another goroutine writes to it:
// each snapshot must be the file as it was after some prefix of the writes
// (the ones that returned before SnapshotCreate was called, and perhaps
// those in flight), never a torn write. A snapshot is a commit: a crash
// afterwards returns the file to the last snapshot's state.
func (r *modelRun) snapWhileWriting(o mop, rng *rand.Rand) error {
	f := r.f
	name, mf := r.pick(rng)
	for len(mf.snaps) > mMaxSnaps-2 {
		if err := f.SnapshotDelete(mf.ino, mf.snaps[0].name); err != nil {
			return fmt.Errorf("snapshot delete %s@%s: %w", name, mf.snaps[0].name, err)
		}
		r.dropSnap(mf, 0)
		r.committed()
	}
	var free []string
	for i := range mSnapNms {
		if sn := fmt.Sprintf("s%d", i); mf.snapIndex(sn) < 0 {
			free = append(free, sn)
		}
	}
	nsnap := min(len(free), 1+rng.IntN(2))
	nwrites := 20 + rng.IntN(40)
	r.note("%s: %d snapshots during %d writes", name, nsnap, nwrites)

	var mu sync.Mutex
	states := []mdata{mf.d.clone()} // states[i]: after i writes
	var grew [][2]int64             // grew[i]: the blocks write i put in the tree at once (it extended the file), or none
	werr := make(chan error, 1)
	snapsDone := make(chan struct{})
	go func() {
		wr := rand.New(rand.NewPCG(o.S, 3))
		d := mf.d.clone()
		buf := make([]byte, 4*BlockSize)
		for i := range nwrites {
			if r.commitBeforeLastWrite && i == nwrites-2 {
				<-snapsDone // the snapshots froze at most i writes
			}
			if r.commitBeforeLastWrite && i == nwrites-1 {
				if err := f.Commit(); err != nil {
					werr <- fmt.Errorf("commit before the last concurrent write: %w", err)
					return
				}
			}
			off, n := wr.Int64N(mSpace), 1+wr.Int64N(4*BlockSize)
			if wr.IntN(2) == 0 { // whole blocks: these take the volume lock shared
				off, n = off/BlockSize*BlockSize, BlockSize*(1+wr.Int64N(4))
			}
			p := buf[:n]
			mFill(p, o.S+uint64(i))
			if k, err := f.WriteAt(mf.ino, p, off); err != nil || k != len(p) {
				werr <- fmt.Errorf("concurrent write %d [%d, +%d): %d, %v", i, off, n, k, err)
				return
			}
			var g [2]int64
			if off+n > d.size {
				g = [2]int64{off / BlockSize, (off + n + BlockSize - 1) / BlockSize}
			}
			d.write(off, p)
			mu.Lock()
			states = append(states, d.clone())
			grew = append(grew, g)
			mu.Unlock()
		}
		werr <- nil
	}()
	type taken struct {
		s      Snapshot
		lo, hi int // states[lo..hi] may be what it froze
	}
	var snaps []taken
	for i := range nsnap {
		runtime.Gosched()
		mu.Lock()
		lo := len(states) - 1
		mu.Unlock()
		s, err := f.SnapshotCreate(mf.ino, free[i])
		mu.Lock()
		hi := len(states) // the write in flight, if any, may be in
		mu.Unlock()
		if err != nil {
			close(snapsDone)
			<-werr
			return fmt.Errorf("snapshot create %s@%s while writing: %w", name, free[i], err)
		}
		snaps = append(snaps, taken{s, lo, hi})
	}
	close(snapsDone)
	if err := <-werr; err != nil {
		return err
	}
	last := -1
	for _, t := range snaps {
		r.snapsCreated++
		if r.seenIDs[t.s.ID] {
			return fmt.Errorf("snapshot %s: id %d was used before", t.s.Name, t.s.ID)
		}
		r.seenIDs[t.s.ID] = true
		match := -1
		for j := max(t.lo, last, 0); j <= min(t.hi, len(states)-1) && match < 0; j++ {
			if uint64(states[j].size) != t.s.Size {
				continue
			}
			err := r.sparseCheck("", states[j],
				func(off uint64, whence int) (uint64, error) { return f.SnapshotLseek(t.s.ID, off, whence) },
				func(p []byte, off int64) (int, error) { return f.ReadSnapshotAt(t.s.ID, p, off) })
			if err == nil {
				match = j
			} else if !errors.Is(err, errMismatch) {
				return fmt.Errorf("snapshot %s taken while writing: %w", t.s.Name, err)
			}
		}
		if match < 0 {
			return fmt.Errorf("snapshot %s of %s (size %d), taken after %d writes and before %d returned, is none of those states: a torn write, or writes out of order",
				t.s.Name, name, t.s.Size, t.lo, t.hi)
		}
		r.note("(%s after %d writes, in [%d, %d])", t.s.Name, match, t.lo, t.hi)
		if match > 0 && match < nwrites {
			r.snapsMidWrites++
		}
		last = match
		mf.snaps = append(mf.snaps, msnap{name: t.s.Name, id: t.s.ID, d: states[match]})
	}
	if last >= 0 { // the last snapshot committed the file as it froze it
		mf.d = states[last].clone()
		r.committed()
	}
	// The writes go on after the last snapshot's commit (and, without a
	// snapshot, from the start): each state between two of them is the
	// file's for a while, and a commit then (another file's fsync later
	// holds what reached the tree; in the background, one may land between
	// any two writes) may hold it or some of its blocks. A write that
	// extends the file reaches the tree at once.
	for j := max(last, 0) + 1; j < len(states); j++ {
		r.now++
		mf.d = states[j]
		if g := grew[j-1]; g[0] < g[1] {
			r.floor(mf.ino, r.now, g[0], g[1])
		}
		mid := j < len(states)-1
		r.hists[mf.ino].record(r.now, mf.d, mid)
		switch {
		case r.commitBeforeLastWrite && j == len(states)-2:
			r.committed() // the writer's Commit, after this write and before the last
		case r.background && mid:
			r.maybeCommitted(false)
		}
	}
	mf.d = states[len(states)-1].clone() // the file's model changes in place; the snapshots' must not
	if err := r.listCheck(name, mf); err != nil {
		return err
	}
	return r.readCheck(name, rng)
}

// gone records that a file is deleted (unlinked, replaced by a rename,
// released after an unlink) and checks that it and its snapshots are gone.
func (r *modelRun) gone(what string, mf *mfile) error {
	for _, s := range mf.snaps {
		r.goneSnaps = append(r.goneSnaps, s.id)
	}
	if len(r.goneSnaps) > 64 {
		r.goneSnaps = r.goneSnaps[len(r.goneSnaps)-64:]
	}
	if a, err := r.f.GetAttr(mf.ino); !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%s: ino %d still there (%+v, %v)", what, mf.ino, a, err)
	}
	for _, s := range mf.snaps {
		if _, err := r.f.SnapshotByID(s.id); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%s: its snapshot %s (id %d): SnapshotByID gives %v, want ErrNotFound", what, s.name, s.id, err)
		}
	}
	return nil
}

// orphanCheck reads a file unlinked while open: still all there.
func (r *modelRun) orphanCheck(mf *mfile) error {
	name := fmt.Sprintf("unlinked ino %d", mf.ino)
	a, err := r.f.GetAttr(mf.ino)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if a.Size != uint64(mf.d.size) || a.Nlink != 0 {
		return fmt.Errorf("%s: size %d nlink %d, model %d and 0", name, a.Size, a.Nlink, mf.d.size)
	}
	if err := r.fileCheck(name, mf); err != nil {
		return err
	}
	return r.listCheck(name, mf)
}

// reclaimed: a remount or crash drops the files unlinked while open.
func (r *modelRun) reclaimed() error {
	for _, mf := range r.orphans {
		if err := r.gone(fmt.Sprintf("unlinked ino %d after a remount", mf.ino), mf); err != nil {
			return err
		}
	}
	r.orphans = nil
	return nil
}

// describeCheck compares Describe with what the model can tell: size,
// snapshots, allocation between the blocks with data and the size, and
// (unshared) that nothing is unique to the file, right after a snapshot,
// clone or rollback shared all of it.
func (r *modelRun) describeCheck(name string, mf *mfile, unshared bool) error {
	r.flushedAll() // Describe flushes every volume's cache to the trees
	d, err := r.f.Describe(mf.ino)
	if err != nil {
		return fmt.Errorf("describe %s: %w", name, err)
	}
	r.committed() // and commits them, to walk them as committed (usage.go, view)
	var names, want []string
	for _, s := range d.Snapshots {
		names = append(names, s.Name)
	}
	for _, s := range mf.snaps {
		want = append(want, s.name)
	}
	roundUp := (uint64(mf.d.size) + BlockSize - 1) / BlockSize * BlockSize
	switch {
	case d.Ino != mf.ino || d.Size != uint64(mf.d.size) || !slices.Equal(names, want):
		return fmt.Errorf("describe %s: ino %d size %d snapshots %v; model %d %d %v", name, d.Ino, d.Size, names, mf.ino, mf.d.size, want)
	case d.Allocated > roundUp || d.Allocated < mf.d.dataBlocks()*BlockSize:
		return fmt.Errorf("describe %s: allocated %d, but the model has %d blocks with data and a size of %d", name, d.Allocated, mf.d.dataBlocks(), mf.d.size)
	case d.Unique > d.Allocated || d.Shared != d.Allocated-d.Unique:
		return fmt.Errorf("describe %s: allocated %d unique %d shared %d", name, d.Allocated, d.Unique, d.Shared)
	case unshared && d.Unique != 0:
		return fmt.Errorf("describe %s: %d bytes unique right after a snapshot, clone or rollback shared all of them", name, d.Unique)
	}
	return nil
}

// usageCheck compares Usage with the model's counts and sums.
func (r *modelRun) usageCheck() error {
	r.flushedAll() // as Describe
	u, err := r.f.Usage()
	if err != nil {
		return fmt.Errorf("usage: %w", err)
	}
	r.committed()
	snaps := 0
	var logical, snapLogical uint64
	for _, mf := range append(slices.Collect(maps.Values(r.files)), r.orphans...) {
		a, err := r.f.GetAttr(mf.ino)
		if err != nil {
			return fmt.Errorf("getattr ino %d: %w", mf.ino, err)
		}
		logical += a.Blocks * 512
		list, err := r.f.Snapshots(mf.ino)
		if err != nil {
			return fmt.Errorf("snapshots of ino %d: %w", mf.ino, err)
		}
		for _, s := range list {
			snapLogical += s.Blocks * BlockSize
		}
		snaps += len(mf.snaps)
	}
	switch {
	case u.Files != len(r.files)+len(r.orphans) || u.Snapshots != snaps:
		return fmt.Errorf("usage: %d files %d snapshots; model %d (%d of them unlinked while open) and %d", u.Files, u.Snapshots, len(r.files)+len(r.orphans), len(r.orphans), snaps)
	case u.Logical != logical || u.SnapshotLogical != snapLogical:
		return fmt.Errorf("usage: logical %d snapshot logical %d; the files' and snapshots' blocks add up to %d and %d", u.Logical, u.SnapshotLogical, logical, snapLogical)
	case u.Physical > u.Logical+u.SnapshotLogical || u.Saved != u.Logical+u.SnapshotLogical-u.Physical || u.Stored < u.Physical:
		return fmt.Errorf("usage: logical %d + snapshots %d, physical %d, saved %d, stored %d do not add up", u.Logical, u.SnapshotLogical, u.Physical, u.Saved, u.Stored)
	}
	return nil
}

func (mf *mfile) snapIndex(name string) int {
	return slices.IndexFunc(mf.snaps, func(s msnap) bool { return s.name == name })
}

func (r *modelRun) dropSnap(mf *mfile, i int) {
	r.goneSnaps = append(r.goneSnaps, mf.snaps[i].id)
	mf.snaps = slices.Delete(mf.snaps, i, i+1)
}

// afterCrash finds the newest commit a crash may have returned to that the
// files agree with (each as its fhist allows), and makes what the files
// hold the model. After a process kill the namespace is as before the
// crash (namespace changes are in Pebble's log when they return); after a
// power cut it is the commit point's too: the names (root must list
// exactly them), each file's snapshots, and the files unlinked while open
// whose unlink the cut lost are files again.
func (r *modelRun) afterCrash() error {
	var root map[string]uint64 // what root lists (power cut)
	if r.pc != nil {
		ents, err := r.f.ReadDir(meta.RootIno)
		if err != nil {
			return fmt.Errorf("after the crash: readdir: %w", err)
		}
		root = map[string]uint64{}
		for _, e := range ents {
			if e.Name != "." && e.Name != ".." {
				root[e.Name] = e.Ino
			}
		}
	}
	cur, _ := r.namespace()
	sizes := map[uint64]uint64{}
	size := func(ino uint64) (uint64, error) {
		if sz, ok := sizes[ino]; ok {
			return sz, nil
		}
		a, err := r.f.GetAttr(ino)
		if err != nil {
			return 0, fmt.Errorf("after the crash: ino %d: %w", ino, err)
		}
		sizes[ino] = a.Size
		return a.Size, nil
	}
	got := map[uint64]mdata{} // what each file holds, read once
	content := func(ino uint64) (mdata, error) {
		if d, ok := got[ino]; ok {
			return d, nil
		}
		d, err := readContent(r.f, ino)
		if err != nil {
			return mdata{}, fmt.Errorf("after the crash: %w", err)
		}
		got[ino] = d
		return d, nil
	}
	var why []string
	for i := len(r.durable) - 1; i >= 0; i-- {
		p := r.durable[i]
		names := cur
		if p.names != nil {
			names = p.names
		}
		bad := ""
		if root != nil && !maps.Equal(root, names) {
			bad = fmt.Sprintf("root lists %v, the state has %v", root, names)
		}
		sorted := slices.Sorted(maps.Keys(names))
		for _, name := range sorted { // sizes first: cheap, and most points differ in them
			if bad != "" {
				break
			}
			ino := names[name]
			sz, err := size(ino)
			if err != nil {
				return err
			}
			h := r.hists[ino]
			want := int64(0) // absent: created after the commit, empty
			if k := h.at(p.t); k >= 0 {
				want = h.states[k].d.size
			}
			if sz != uint64(want) {
				bad = fmt.Sprintf("%s (ino %d): size %d, model %d at the commit point (sizes since the certain point: %v)", name, ino, sz, want, h.sizes(p.t))
			}
		}
		kept := 0
		for _, name := range sorted {
			if bad != "" {
				break
			}
			ino := names[name]
			d, err := content(ino)
			if err != nil {
				return err
			}
			w, k := r.hists[ino].crashKept(d, p.t, p.exact)
			if w != "" {
				bad = fmt.Sprintf("%s (ino %d): %s", name, ino, w)
				break
			}
			kept = max(kept, k)
			if p.snaps != nil {
				list, err := r.f.Snapshots(ino)
				if err != nil {
					return fmt.Errorf("after the crash: snapshots of %s: %w", name, err)
				}
				var g, w []string
				for _, s := range list {
					g = append(g, fmt.Sprintf("%s/%d", s.Name, s.ID))
				}
				for _, s := range p.snaps[ino] {
					w = append(w, fmt.Sprintf("%s/%d", s.name, s.id))
				}
				if !slices.Equal(g, w) {
					bad = fmt.Sprintf("snapshots of %s: %v, model %v", name, g, w)
				}
			}
		}
		if bad == "" {
			r.note("(commit %d of %d)", i+1, len(r.durable))
			if i > 0 {
				r.crashLater++
			}
			if kept > 0 {
				r.note("(a file newer than its certain point)")
				r.crashNewer++
			}
			if kept > 1 {
				r.note("(a file as none of its states)")
				r.crashMixed++
			}
			for _, name := range sorted {
				if r.hists[names[name]].midState(got[names[name]], p.t) {
					r.note("(between two writes of a snapshot-while-writing)")
					r.crashMidWrites++
					break
				}
			}
			if p.names != nil && !maps.Equal(p.names, cur) {
				r.note("(namespace taken back)")
				r.crashOldNames++
			}
			if p.names != nil {
				r.restoreNamespace(p)
			}
			for _, mf := range r.files {
				mf.d = got[mf.ino]
			}
			r.committed()
			return nil
		}
		if len(why) < 8 {
			why = append(why, fmt.Sprintf("commit point %d (time %d, exact %v): %s", i+1, p.t, p.exact, bad))
		}
	}
	return fmt.Errorf("after the crash no file set matches any of the %d commits it may return to (newest first):\n  %s",
		len(r.durable), strings.Join(why, "\n  "))
}

// restoreNamespace makes p's namespace the model's after a power cut: its
// names and snapshots; a file unlinked while open that has a name again
// is no longer an orphan, and the snapshots it brings back are no longer
// gone.
func (r *modelRun) restoreNamespace(p mpoint) {
	r.files = make(map[string]*mfile, len(p.names))
	back := map[uint64]bool{}
	for name, ino := range p.names {
		r.files[name] = &mfile{ino: ino, snaps: slices.Clone(p.snaps[ino])}
		back[ino] = true
		for _, s := range p.snaps[ino] {
			r.goneSnaps = slices.DeleteFunc(r.goneSnaps, func(id uint64) bool { return id == s.id })
		}
	}
	r.orphans = slices.DeleteFunc(r.orphans, func(mf *mfile) bool {
		if back[mf.ino] {
			r.note("(unlink of ino %d undone)", mf.ino)
		}
		return back[mf.ino]
	})
}

// check closes nothing: the data dir must not be open. It runs Check and
// requires no problem.
func (r *modelRun) check() error {
	rep, err := Check(r.opts)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if len(rep.Problems) > 0 || rep.CorruptBlocks > 0 || rep.MissingObjects > 0 {
		return fmt.Errorf("check: %d corrupt blocks, %d missing objects, problems:\n  %s",
			rep.CorruptBlocks, rep.MissingObjects, strings.Join(rep.Problems, "\n  "))
	}
	return nil
}

// readCheck reads a random range of a file (sometimes all of it, sometimes
// across the end) and compares it and the size with the model.
func (r *modelRun) readCheck(name string, rng *rand.Rand) error {
	mf := r.files[name]
	a, err := r.f.GetAttr(mf.ino)
	if err != nil {
		return fmt.Errorf("getattr %s: %w", name, err)
	}
	if a.Size != uint64(mf.d.size) {
		return fmt.Errorf("%s: size %d, model %d", name, a.Size, mf.d.size)
	}
	if rng.IntN(40) == 0 {
		return r.fileCheck(name, mf)
	}
	off := rng.Int64N(mf.d.size + BlockSize)
	n := 1 + rng.Int64N(16<<10)
	return r.rangeCheck(name, mf.d, off, n, func(p []byte, off int64) (int, error) { return r.f.ReadAt(mf.ino, p, off) })
}

func (r *modelRun) rangeCheck(what string, d mdata, off, n int64, read func([]byte, int64) (int, error)) error {
	// Reads go in chunks of at most 256 KiB into reused buffers: large
	// allocations are what costs most under -race.
	const chunk = 256 << 10
	if len(r.got) < chunk {
		r.got, r.want = make([]byte, chunk), make([]byte, chunk)
	}
	for done := int64(0); done < n; {
		k := min(n-done, chunk)
		if k > BlockSize && (off+done+k)%BlockSize != 0 && n-done > chunk {
			k -= (off + done + k) % BlockSize // keep later chunks aligned
		}
		pos := off + done
		got, err := read(r.got[:k], pos)
		if err != nil {
			return fmt.Errorf("read %s [%d, +%d): %w", what, pos, k, err)
		}
		want := d.read(r.want[:k], pos)
		if !mSame(r.got[:got], r.want[:want]) {
			return fmt.Errorf("%w: %s: %s", errMismatch, what, mDiff(r.got[:got], r.want[:want], pos))
		}
		if want < int(k) {
			return nil // the end of the content
		}
		done += k
	}
	return nil
}

var errMismatch = errors.New("differs from the model")

// fileCheck reads a whole file (and a block past its end). Its SEEK_DATA
// flushes the volume's cache to the tree.
func (r *modelRun) fileCheck(name string, mf *mfile) error {
	if mf.d.size > 0 {
		r.flushed(mf.ino)
	}
	return r.sparseCheck(name, mf.d,
		func(off uint64, whence int) (uint64, error) { return r.f.Lseek(mf.ino, off, whence) },
		func(p []byte, off int64) (int, error) { return r.f.ReadAt(mf.ino, p, off) })
}

// sparseCheck compares all of something with the model, reading only what
// SEEK_DATA finds (files reach 8 MiB, mostly holes): the holes between
// must be zeros in the model, the data must read as the model's, and the
// read past the end must be empty.
func (r *modelRun) sparseCheck(what string, d mdata, seek func(uint64, int) (uint64, error), read func([]byte, int64) (int, error)) error {
	for pos := int64(0); pos < d.size; {
		data, err := seek(uint64(pos), SeekData)
		if errors.Is(err, ErrNoData) {
			data = uint64(d.size)
		} else if err != nil {
			return fmt.Errorf("%s: SEEK_DATA from %d: %w", what, pos, err)
		}
		if data < uint64(pos) || data > uint64(d.size) {
			return fmt.Errorf("%s: SEEK_DATA from %d gives %d (size %d)", what, pos, data, d.size)
		}
		if x := d.firstData(pos, int64(data)); x >= 0 {
			return fmt.Errorf("%w: %s: SEEK_DATA from %d skips to %d, but the model has data at %d", errMismatch, what, pos, data, x)
		}
		if int64(data) >= d.size {
			break
		}
		hole, err := seek(data, SeekHole)
		if err != nil || hole <= data || hole > uint64(d.size) {
			return fmt.Errorf("%s: SEEK_HOLE from %d gives %d, %v (size %d)", what, data, hole, err, d.size)
		}
		if err := r.rangeCheck(what, d, int64(data), int64(hole-data), read); err != nil {
			return err
		}
		pos = int64(hole)
	}
	return r.rangeCheck(what, d, d.size, BlockSize, read)
}

// snapCheck reads one snapshot whole (and past its end), or with rng
// mostly a random range of it (whole reads are what costs under -race).
func (r *modelRun) snapCheck(name string, mf *mfile, i int, rng *rand.Rand) error {
	s := mf.snaps[i]
	what := fmt.Sprintf("%s@%s (id %d)", name, s.name, s.id)
	if rng != nil && rng.IntN(4) != 0 { // a random unaligned range
		off := rng.Int64N(s.d.size + BlockSize)
		return r.rangeCheck(what, s.d, off, 1+rng.Int64N(64<<10), func(p []byte, off int64) (int, error) { return r.f.ReadSnapshotAt(s.id, p, off) })
	}
	return r.sparseCheck(what, s.d,
		func(off uint64, whence int) (uint64, error) { return r.f.SnapshotLseek(s.id, off, whence) },
		func(p []byte, off int64) (int, error) { return r.f.ReadSnapshotAt(s.id, p, off) })
}

// listCheck compares a file's snapshot list with the model's.
func (r *modelRun) listCheck(name string, mf *mfile) error {
	got, err := r.f.Snapshots(mf.ino)
	if err != nil {
		return fmt.Errorf("snapshots of %s: %w", name, err)
	}
	var g, w []string
	for _, s := range got {
		g = append(g, fmt.Sprintf("%s/%d/%d/vol%d", s.Name, s.ID, s.Size, s.Vol))
	}
	for _, s := range mf.snaps {
		w = append(w, fmt.Sprintf("%s/%d/%d/vol%d", s.name, s.id, s.d.size, mf.ino))
	}
	if !slices.Equal(g, w) {
		return fmt.Errorf("snapshots of %s (name/id/size/vol, oldest first): %v, model %v", name, g, w)
	}
	for i, s := range got {
		if d := mf.snaps[i].d; s.Blocks*BlockSize > uint64(d.size)+BlockSize-1 {
			return fmt.Errorf("snapshot %s of %s maps %d blocks, more than its size %d holds", s.Name, name, s.Blocks, d.size)
		}
		byID, err := r.f.SnapshotByID(s.ID)
		if err != nil || byID.Name != s.Name || byID.Vol != s.Vol {
			return fmt.Errorf("SnapshotByID(%d) = %+v, %v; want %s of %d", s.ID, byID, err, s.Name, s.Vol)
		}
	}
	return nil
}

// verifyAll compares the namespace, every file's size and snapshot list,
// (files=true) every file's content and (all=true) every snapshot's
// content with the model; otherwise one random snapshot per file.
func (r *modelRun) verifyAll(all, files bool) error {
	if all {
		r.fullVerifies++
	}
	ents, err := r.f.ReadDir(meta.RootIno)
	if err != nil {
		return fmt.Errorf("readdir: %w", err)
	}
	var g, w []string
	for _, e := range ents {
		g = append(g, fmt.Sprintf("%s:%d", e.Name, e.Ino))
	}
	for _, n := range r.names() {
		w = append(w, fmt.Sprintf("%s:%d", n, r.files[n].ino))
	}
	sort.Strings(g)
	if !slices.Equal(g, w) {
		return fmt.Errorf("root lists %v, model %v", g, w)
	}
	rng := rand.New(rand.NewPCG(uint64(r.step), 7))
	for _, name := range r.names() {
		mf := r.files[name]
		a, err := r.f.GetAttr(mf.ino)
		if err != nil {
			return fmt.Errorf("getattr %s: %w", name, err)
		}
		if a.Size != uint64(mf.d.size) {
			return fmt.Errorf("%s: size %d, model %d", name, a.Size, mf.d.size)
		}
		if files {
			if err := r.fileCheck(name, mf); err != nil {
				return err
			}
		}
		if err := r.listCheck(name, mf); err != nil {
			return err
		}
		for i := range mf.snaps {
			if all || i == rng.IntN(len(mf.snaps)) {
				if err := r.snapCheck(name, mf, i, nil); err != nil {
					return err
				}
			}
		}
	}
	for _, mf := range r.orphans {
		if err := r.orphanCheck(mf); err != nil {
			return err
		}
	}
	if all {
		for _, name := range r.names() {
			if err := r.describeCheck(name, r.files[name], false); err != nil {
				return err
			}
		}
		if err := r.usageCheck(); err != nil {
			return err
		}
	}
	for _, id := range r.goneSnaps {
		if s, err := r.f.SnapshotByID(id); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("deleted snapshot id %d: SnapshotByID gives %+v, %v; want ErrNotFound", id, s, err)
		}
	}
	return nil
}
