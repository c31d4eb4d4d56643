package fs

// Helpers of the model-based test (snapshot_model_test.go): the in-memory
// model of a file's content, the crash simulation and the op encoding.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
)

// mblock is one 4 KiB block of the model. Blocks are never changed once
// stored in an mdata: a change stores a new block, so copying an mdata's
// block slice is a full, independent copy of the content (snapshots,
// clones and commit points cost a slice of pointers, not the bytes).
type mblock = [BlockSize]byte

// mdata is the model of one file's (or one snapshot's) content: size
// bytes, block i of which is blks[i] (nil reads as zeros).
type mdata struct {
	size int64
	blks []*mblock
}

func (d mdata) clone() mdata { return mdata{size: d.size, blks: slices.Clone(d.blks)} }

// resize sets the size; shrinking forgets the blocks past it and zeroes
// the tail of the last one, so growing again reads zeros.
func (d *mdata) resize(n int64) {
	nb := int((n + BlockSize - 1) / BlockSize)
	if n < d.size {
		d.blks = d.blks[:nb]
		if r := n % BlockSize; r != 0 && d.blks[nb-1] != nil {
			b := *d.blks[nb-1]
			clear(b[r:])
			d.blks[nb-1] = &b
		}
	} else if nb > len(d.blks) {
		d.blks = append(d.blks, make([]*mblock, nb-len(d.blks))...)
	}
	d.size = n
}

// modify calls fn on a fresh copy of every block that [off, off+n) touches
// (within the size), with the range inside the block; whole blocks are
// given to whole(i) instead when whole is not nil.
func (d *mdata) modify(off, n int64, whole func(i int) bool, fn func(b *mblock, from, to int, pos int64)) {
	end := min(off+n, d.size)
	for pos := off; pos < end; {
		i := int(pos / BlockSize)
		from := int(pos % BlockSize)
		to := int(min(end-int64(i)*BlockSize, BlockSize))
		if whole != nil && from == 0 && to == BlockSize && whole(i) {
			pos = int64(i+1) * BlockSize
			continue
		}
		var b mblock
		if d.blks[i] != nil {
			b = *d.blks[i]
		}
		fn(&b, from, to, pos)
		d.blks[i] = &b
		pos = int64(i)*BlockSize + int64(to)
	}
}

func (d *mdata) write(off int64, p []byte) {
	if end := off + int64(len(p)); end > d.size {
		d.resize(end)
	}
	d.modify(off, int64(len(p)), nil, func(b *mblock, from, to int, pos int64) {
		copy(b[from:to], p[pos-off:])
	})
}

// zero makes [off, off+n) (within the size) read as zeros.
func (d *mdata) zero(off, n int64) {
	d.modify(off, n, func(i int) bool { d.blks[i] = nil; return true }, func(b *mblock, from, to int, _ int64) {
		clear(b[from:to])
	})
}

// read is ReadAt of the model: short at the end of the content.
func (d mdata) read(p []byte, off int64) int {
	if off >= d.size {
		return 0
	}
	p = p[:min(int64(len(p)), d.size-off)]
	for done := 0; done < len(p); {
		pos := off + int64(done)
		i := int(pos / BlockSize)
		from := int(pos % BlockSize)
		var k int
		if b := d.blks[i]; b != nil {
			k = copy(p[done:], b[from:])
		} else {
			k = min(len(p)-done, BlockSize-from)
			clear(p[done : done+k])
		}
		done += k
	}
	return len(p)
}

var mZeroBlock mblock

// firstData is the first offset in [from, to) holding a non-zero byte, or
// -1.
func (d mdata) firstData(from, to int64) int64 {
	to = min(to, d.size)
	for pos := from; pos < to; {
		i := pos / BlockSize
		end := min(to, (i+1)*BlockSize)
		if b := d.blks[i]; b != nil {
			for j := pos; j < end; j++ {
				if b[j-i*BlockSize] != 0 {
					return j
				}
			}
		}
		pos = end
	}
	return -1
}

// equal reports whether p is exactly the content of d.
func (d mdata) equal(p []byte) bool {
	if int64(len(p)) != d.size {
		return false
	}
	for i := 0; i*BlockSize < len(p); i++ {
		b := d.blks[i]
		if b == nil {
			b = &mZeroBlock
		}
		end := min(len(p), (i+1)*BlockSize)
		if !mSame(p[i*BlockSize:end], b[:end-i*BlockSize]) {
			return false
		}
	}
	return true
}

// dataBlocks counts the blocks that hold a non-zero byte: the engine must
// map at least these.
func (d mdata) dataBlocks() uint64 {
	var n uint64
	for _, b := range d.blks {
		if b != nil && *b != mZeroBlock {
			n++
		}
	}
	return n
}

func (d mdata) bytes() []byte {
	p := make([]byte, d.size)
	d.read(p, 0)
	return p
}

// mDiff describes where got and want first differ, for a failure message.
func mDiff(got, want []byte, off int64) string {
	if len(got) != len(want) {
		return fmt.Sprintf("read %d bytes at %d, model has %d", len(got), off, len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			j := i
			for j < len(got) && got[j] != want[j] {
				j++
			}
			allZero := !slices.ContainsFunc(got[i:j], func(c byte) bool { return c != 0 })
			return fmt.Sprintf("first difference at byte %d (block %d +%d), %d bytes differ from there (engine's are all zero: %v); got % x want % x",
				off+int64(i), (off+int64(i))/BlockSize, (off+int64(i))%BlockSize, j-i, allZero,
				got[i:min(i+8, len(got))], want[i:min(i+8, len(want))])
		}
	}
	return "equal"
}

// mFill writes pseudo-random bytes from seed into p.
func mFill(p []byte, seed uint64) {
	var key [32]byte
	for i := range 4 {
		seed = seed*0x9e3779b97f4a7c15 + 1
		for j := range 8 {
			key[i*8+j] = byte(seed >> (8 * j))
		}
	}
	rand.NewChaCha8(key).Read(p)
}

// ---- crash ----

// mCrash drops f like a SIGKILL would: the background work stops, nothing is
// committed, Pebble and the lock are released so the data dir can be
// opened again. (The log is closed only so that its segment files are not
// leaked: syncing blocks no commit references changes nothing a reopen
// sees.)
func mCrash(f *FS) {
	f.compactor.Stop()
	close(f.stop)
	<-f.done
	<-f.wbDone
	f.log.Close()
	f.db.Close()
	f.lock.Close()
}

// ---- what a crash may keep of a file ----

// fhist is one file's history since its last certain point, the basis of
// what a crash may return it to (docs/write-cache.md, "Per-volume fsync").
// A commit captures every volume's tree as it is: a file's size then, and
// for each block the last value that reached the log, which is its value
// at the file's last certain point (its fsync, or a commit that flushed
// every volume: snapshot, clone, rollback, compaction, remount) or that of
// a later write to it (a write, punch, zero range, truncate,
// copy_file_range). Some changes reach the tree at once (floors): a write
// that extends the file, whole blocks punched or truncated away, blocks
// shared by copy_file_range, and a flush of the whole volume
// (copy_file_range, SEEK_DATA, describe, df); a commit after one holds the
// blocks it covers at least that new.
type fhist struct {
	states []fstate // oldest first; states[0] is the last certain point (or the create)
	floors []floorEv
	// certain: states[0] is a certain point (not a create): at a commit
	// point older than it the file is as there (an fsync that wrote a
	// journal record made the file certain without committing the others,
	// so a crash may return to an older point for them, fs/journal.go).
	certain bool
}

// fstate is the file's content from time t on (until the next state).
type fstate struct {
	t   int
	d   mdata
	mid bool // between two writes of a snapshot-while-writing
}

// floorEv: during the op at time when, blocks [from, to) reached the tree
// with the values they have at time t (t <= when: copy_file_range flushes
// the volumes as they were before it). A commit at or after when holds
// them at least that new; one before it, not.
type floorEv struct {
	when, t  int
	from, to int64
}

const allBlocks = int64(1) << 62

// newFHist starts a history at a certain point: content d at time t.
func newFHist(t int, d mdata, mid bool) *fhist {
	return &fhist{states: []fstate{{t: t, d: d.clone(), mid: mid}}, floors: []floorEv{{when: t, t: t, from: 0, to: allBlocks}}}
}

// record appends the content d at time t if it differs from the last
// state's.
func (h *fhist) record(t int, d mdata, mid bool) {
	last := h.states[len(h.states)-1]
	if last.d.size == d.size && slices.Equal(last.d.blks, d.blks) {
		return // blocks are never changed in place: equal pointers, equal content
	}
	h.states = append(h.states, fstate{t: t, d: d.clone(), mid: mid})
}

func (h *fhist) floor(when, t int, from, to int64) {
	if from < to {
		h.floors = append(h.floors, floorEv{when: when, t: t, from: from, to: to})
	}
}

// at is the index of the state at time t, -1 if the history starts later
// (the file was created after t); 0 for a time before a certain point.
func (h *fhist) at(t int) int {
	if h == nil {
		return -1
	}
	i := len(h.states) - 1
	for i >= 0 && h.states[i].t > t {
		i--
	}
	if i < 0 && h.certain {
		return 0
	}
	return i
}

// floorOf is the time from which block b's value counts at a commit at
// time t: the newest floor made by then that covers it. (A commit at t is
// made after the op at t changed the files: a point is taken at the end
// of an op, or is exact.)
func (h *fhist) floorOf(b int64, t int) int {
	fl := 0
	for _, e := range h.floors {
		if e.when <= t && e.from <= b && b < e.to {
			fl = max(fl, e.t)
		}
	}
	return fl
}

// blockOf is block b of d as a reader sees it (nil: zeros).
func (d mdata) blockOf(b int64) *mblock {
	if b < int64(len(d.blks)) {
		return d.blks[b]
	}
	return nil
}

// sameBlock compares the first n bytes of two blocks (nil: zeros).
func sameBlock(x, y *mblock, n int) bool {
	if x == y {
		return true
	}
	if x == nil {
		x = &mZeroBlock
	}
	if y == nil {
		y = &mZeroBlock
	}
	return mSame(x[:n], y[:n])
}

// sameData reports whether two contents read the same.
func sameData(x, y mdata) bool {
	if x.size != y.size {
		return false
	}
	for b := int64(0); b*BlockSize < x.size; b++ {
		if !sameBlock(x.blockOf(b), y.blockOf(b), int(min(BlockSize, x.size-b*BlockSize))) {
			return false
		}
	}
	return true
}

// crashKept judges got, a file's content after a crash, against a commit
// at time t (exact: one that flushed every volume, so the file is exactly
// as it was then). It returns why got cannot be, or "" and how it relates
// to the history: kept is 0 when got is the file at its last certain point,
// 1 when it is a later state of the file, 2 when it is none of the states
// but a mix of blocks of several (a later write kept, an earlier one not).
func (h *fhist) crashKept(got mdata, t int, exact bool) (why string, kept int) {
	i := h.at(t)
	if i < 0 { // created after the commit: empty there
		if got.size != 0 {
			return fmt.Sprintf("size %d, but the file is newer than the commit point (empty there)", got.size), 0
		}
		return "", 0
	}
	at := h.states[i]
	if got.size != at.d.size {
		// Every size change reaches the tree at once: the size is the one
		// the commit captured.
		return fmt.Sprintf("size %d, but %d at the commit point (sizes since the certain point: %v)", got.size, at.d.size, h.sizes(t)), 0
	}
	if exact {
		if !sameData(got, at.d) {
			return "not the file as of the commit point, which flushed every volume: " + mDiffData(got, at.d), 0
		}
	} else {
		if why := h.blocksKept(got, i, t); why != "" {
			return why, 0
		}
	}
	if sameData(got, h.states[0].d) {
		return "", 0
	}
	for k := 1; k <= i; k++ {
		if sameData(got, h.states[k].d) {
			return "", 1
		}
	}
	return "", 2
}

// blocksKept checks the block rule: each block of got holds a value the
// block had in the states from its floor to time t (state i).
func (h *fhist) blocksKept(got mdata, i, t int) string {
	for b := int64(0); b*BlockSize < got.size; b++ {
		n := int(min(BlockSize, got.size-b*BlockSize))
		g := got.blockOf(b)
		fl := h.floorOf(b, t)
		ok := false
		for k := i; k >= 0 && !ok; k-- {
			ok = sameBlock(g, h.states[k].d.blockOf(b), n)
			if k > 0 && h.states[k].t <= fl {
				break // states before k ended before the floor
			}
		}
		if !ok {
			return fmt.Sprintf("block %d holds none of its values from time %d (its floor) to the commit point at %d (%d states since the certain point at %d)",
				b, fl, t, i+1, h.states[0].t)
		}
	}
	return ""
}

// sizes lists the file's sizes from its certain point to time t.
func (h *fhist) sizes(t int) []int64 {
	var out []int64
	if h == nil {
		return out
	}
	for _, s := range h.states {
		if s.t <= t {
			out = append(out, s.d.size)
		}
	}
	return out
}

// midState reports whether got is exactly a state between two writes of a
// snapshot-while-writing, at or before time t, and not the file's newest.
func (h *fhist) midState(got mdata, t int) bool {
	if h == nil || sameData(got, h.states[len(h.states)-1].d) {
		return false
	}
	for _, s := range h.states {
		if s.mid && s.t <= t && sameData(got, s.d) {
			return true
		}
	}
	return false
}

// mDiffData is mDiff of two contents.
func mDiffData(got, want mdata) string { return mDiff(got.bytes(), want.bytes(), 0) }

// readContent reads a whole file into an mdata (all-zero blocks nil).
func readContent(f *FS, ino uint64) (mdata, error) {
	a, err := f.GetAttr(ino)
	if err != nil {
		return mdata{}, err
	}
	d := mdata{size: int64(a.Size), blks: make([]*mblock, (a.Size+BlockSize-1)/BlockSize)}
	buf := make([]byte, 256<<10)
	for pos := int64(0); pos < d.size; {
		n, err := f.ReadAt(ino, buf, pos)
		if err != nil {
			return mdata{}, fmt.Errorf("read ino %d at %d: %w", ino, pos, err)
		}
		if n == 0 || (n < len(buf) && pos+int64(n) != d.size) {
			return mdata{}, fmt.Errorf("read ino %d at %d: %d bytes, size %d", ino, pos, n, d.size)
		}
		for k := 0; k < n; k += BlockSize {
			p := buf[k:min(n, k+BlockSize)]
			if slices.ContainsFunc(p, func(c byte) bool { return c != 0 }) {
				var b mblock
				copy(b[:], p)
				d.blks[(pos+int64(k))/BlockSize] = &b
			}
		}
		pos += int64(n)
	}
	return d, nil
}

// ---- ops ----

// mop is one operation of the model test. Its parameters are derived from
// S whatever the state, so a sequence stays valid (if different) when ops
// are removed from it: that is what the minimizer relies on.
type mop struct {
	K opKind
	S uint64
}

type opKind uint8

const (
	opWrite opKind = iota
	opPunch
	opZero
	opTruncate
	opCreate
	opUnlink
	opSnapCreate
	opSnapDelete
	opRollback
	opCloneFile
	opCloneSnap
	opCompact
	opFsync
	opRemount
	opCrash
	opVerify
	opRename
	opCopyRange
	opRelease
	opSnapWhileWriting
	numOps
)

var opNames = [...]string{"opWrite", "opPunch", "opZero", "opTruncate", "opCreate", "opUnlink", "opSnapCreate",
	"opSnapDelete", "opRollback", "opCloneFile", "opCloneSnap", "opCompact", "opFsync", "opRemount", "opCrash", "opVerify",
	"opRename", "opCopyRange", "opRelease", "opSnapWhileWriting"}

func (k opKind) String() string { return opNames[k] }

// opWeights: how often each op is generated (per mille, roughly).
var opWeights = [numOps]int{
	opWrite: 300, opPunch: 60, opZero: 50, opTruncate: 50, opCreate: 30, opUnlink: 20,
	opSnapCreate: 70, opSnapDelete: 50, opRollback: 40, opCloneFile: 35, opCloneSnap: 35,
	opCompact: 25, opFsync: 50, opRemount: 3, opCrash: 6, opVerify: 3,
	opRename: 25, opCopyRange: 30, opRelease: 10, opSnapWhileWriting: 8,
}

func mGenOps(seed uint64, n int) []mop { return mGenOpsWeighted(seed, n, &opWeights) }

// mGenOpsWeighted is mGenOps with other weights.
func mGenOpsWeighted(seed uint64, n int, weights *[numOps]int) []mop {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	total := 0
	for _, w := range weights {
		total += w
	}
	ops := make([]mop, n)
	for i := range ops {
		x := r.IntN(total)
		k := opKind(0)
		for x >= weights[k] {
			x -= weights[k]
			k++
		}
		ops[i] = mop{K: k, S: r.Uint64()}
	}
	return ops
}

// mGoLiteral prints ops as Go source for a focused repro test.
func mGoLiteral(ops []mop) string {
	var b strings.Builder
	b.WriteString("[]mop{\n")
	for _, o := range ops {
		fmt.Fprintf(&b, "\t{%s, %#x},\n", o.K, o.S)
	}
	b.WriteString("}")
	return b.String()
}

// mMinimize shrinks a failing op sequence (ddmin over chunks, then single
// ops) while fails keeps reporting a failure. budget bounds the runs.
func mMinimize(ops []mop, fails func([]mop) bool, budget int, logf func(string, ...any)) []mop {
	runs := 0
	for n := 2; len(ops) > 1 && runs < budget; {
		chunk := (len(ops) + n - 1) / n
		reduced := false
		for start := 0; start < len(ops) && runs < budget; start += chunk {
			cand := append(slices.Clone(ops[:start]), ops[min(start+chunk, len(ops)):]...)
			runs++
			if fails(cand) {
				ops = cand
				logf("minimize: %d ops (run %d)", len(ops), runs)
				n = max(n-1, 2)
				reduced = true
				break
			}
		}
		if !reduced {
			if chunk == 1 {
				break
			}
			n = min(2*n, len(ops))
		}
	}
	return ops
}

// mSame reports whether two readbacks are equal (a helper so the comparison
// is one place a deliberate model break can target).
func mSame(got, want []byte) bool { return bytes.Equal(got, want) }

// ---- a concurrent reader ----

// bgReader reads snapshots and files from another goroutine while the
// model run goes on (writes, rollbacks, compactions move blocks under
// it). Snapshots never change, so what it reads of one must be the
// model's content, whenever it reads; file reads are only checked for
// errors. A read that fails because its snapshot or file is being deleted
// is fine; one that fails while the model still has it is not (checked at
// the next sync, when the model has caught up with the op in flight).
type bgReader struct {
	mu sync.RWMutex // held exclusively while the FS is closed and reopened
	f  *FS

	smu     sync.Mutex
	snaps   []bgSnap
	inos    []uint64
	pending []bgFail // reads that failed, to be judged at the next sync
	err     error
	reads   int

	tick       chan struct{}
	stop, done chan struct{}
}

type bgSnap struct {
	id   uint64
	what string
	d    mdata
}

type bgFail struct {
	snap, ino uint64
	err       error
}

func (b *bgReader) Stop() {
	if b == nil {
		return
	}
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	<-b.done
}

// sync gives the reader the model's snapshots and files after an op and
// judges the reads that failed meanwhile.
func (b *bgReader) sync(snaps []bgSnap, inos []uint64) error {
	b.smu.Lock()
	defer b.smu.Unlock()
	err := b.err
	for _, p := range b.pending {
		if err != nil {
			break
		}
		switch {
		case p.snap != 0 && slices.ContainsFunc(snaps, func(s bgSnap) bool { return s.id == p.snap }):
			err = fmt.Errorf("concurrent ReadSnapshotAt of live snapshot id %d: %v", p.snap, p.err)
		case p.ino != 0 && slices.Contains(inos, p.ino):
			err = fmt.Errorf("concurrent ReadAt of live ino %d: %v", p.ino, p.err)
		}
	}
	b.pending = b.pending[:0]
	b.snaps, b.inos = snaps, inos
	select {
	case b.tick <- struct{}{}:
	default:
	}
	return err
}

func (b *bgReader) run(rng *rand.Rand) {
	defer close(b.done)
	got, want := make([]byte, 16<<10), make([]byte, 16<<10)
	for {
		select {
		case <-b.stop:
			return
		case <-b.tick:
		}
		b.mu.RLock()
		if b.f == nil { // a reopen failed: the run is ending with its error
			b.mu.RUnlock()
			continue
		}
		b.smu.Lock()
		var s bgSnap
		if len(b.snaps) > 0 {
			s = b.snaps[rng.IntN(len(b.snaps))]
		}
		var ino uint64
		if len(b.inos) > 0 {
			ino = b.inos[rng.IntN(len(b.inos))]
		}
		b.reads++
		b.smu.Unlock()
		var fail []bgFail
		if s.id != 0 {
			off, n := rng.Int64N(s.d.size+BlockSize), 1+rng.IntN(len(got))
			k, err := b.f.ReadSnapshotAt(s.id, got[:n], off)
			if err != nil {
				fail = append(fail, bgFail{snap: s.id, err: err})
			} else if w := s.d.read(want[:n], off); !mSame(got[:k], want[:w]) {
				b.smu.Lock()
				if b.err == nil {
					b.err = fmt.Errorf("concurrent read of %s [%d, +%d): %s", s.what, off, n, mDiff(got[:k], want[:w], off))
				}
				b.smu.Unlock()
			}
		}
		if ino != 0 {
			if _, err := b.f.ReadAt(ino, got[:1+rng.IntN(len(got))], rng.Int64N(mSpace)); err != nil {
				fail = append(fail, bgFail{ino: ino, err: err})
			}
		}
		if len(fail) > 0 {
			// Before mu is released: a power cut (which holds mu) judges
			// what is pending against the model before the cut, which
			// may bring back what a read rightly did not find.
			b.smu.Lock()
			b.pending = append(b.pending, fail...)
			b.smu.Unlock()
		}
		b.mu.RUnlock()
	}
}
