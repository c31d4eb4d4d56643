package integration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Crash consistency: the mount process is SIGKILLed at random moments while
// several writers write 4 KiB records and fsync them; after every remount each
// acknowledged record must be there, and every 4 KiB block must hold exactly one
// whole record (old or new), never a torn or foreign one.

const (
	crashFiles    = 3
	crashFileSize = 16 * MiB
	crashBlocks   = crashFileSize / blockSize
	blockSize     = 4096
	crashWorkers  = 4
	recordMagic   = 0x7661667363726173 // "vafscras"
)

// A record fills one 4 KiB block: a header naming where it belongs and which
// write it is, then bytes derived from its sequence number.
//
//	0  magic   8
//	8  file    4
//	12 block   4
//	16 seq     8
//	24 payload 4072 = pattern(seq)
func makeRecord(buf []byte, file, block int, seq uint64) {
	binary.LittleEndian.PutUint64(buf[0:], recordMagic)
	binary.LittleEndian.PutUint32(buf[8:], uint32(file))
	binary.LittleEndian.PutUint32(buf[12:], uint32(block))
	binary.LittleEndian.PutUint64(buf[16:], seq)
	fillPattern(buf[24:blockSize], seq, 24)
}

// parseRecord returns the record's seq, 0 for an all-zero block, or an error for
// anything that is not exactly one whole record written for this place.
func parseRecord(buf []byte, file, block int) (uint64, error) {
	if isZero(buf) {
		return 0, nil
	}
	if binary.LittleEndian.Uint64(buf[0:]) != recordMagic {
		return 0, fmt.Errorf("no record header (first bytes % x)", buf[:16])
	}
	f, b := int(binary.LittleEndian.Uint32(buf[8:])), int(binary.LittleEndian.Uint32(buf[12:]))
	seq := binary.LittleEndian.Uint64(buf[16:])
	if f != file || b != block {
		return seq, fmt.Errorf("record %d written for file %d block %d found at file %d block %d", seq, f, b, file, block)
	}
	want := make([]byte, blockSize)
	makeRecord(want, file, block, seq)
	for i := range want {
		if want[i] != buf[i] {
			return seq, fmt.Errorf("record %d torn: differs from byte %d on", seq, i)
		}
	}
	return seq, nil
}

// blockState is what the test knows about one block across cycles.
type blockState struct {
	durable uint64   // seq that must be there (0 = zeros): last acked or observed after a crash
	pending []uint64 // seqs written after durable whose fsync did not return
}

type crashState struct {
	mu     sync.Mutex
	blocks [crashFiles][crashBlocks]blockState
	// Small files created with fsync of file and directory, acknowledged.
	files   map[string]uint64 // name -> seq of content
	deleted map[string]bool   // acknowledged deletions
	seq     uint64
	// Blocks with unacknowledged writes at a crash: found with the acknowledged
	// record (lost) or with a later one (kept). Both are allowed; the counts show
	// that the kills land while writes are in flight.
	unackedLost, unackedKept int
	clones                   *cloneSet // nil without copy_file_range
}

func (s *crashState) nextSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	return s.seq
}

// issued records a write before it is made.
func (s *crashState) issued(file, block int, seq uint64) {
	s.mu.Lock()
	b := &s.blocks[file][block]
	b.pending = append(b.pending, seq)
	s.mu.Unlock()
}

// acked records a write whose fsync returned.
func (s *crashState) acked(file, block int, seq uint64) {
	s.mu.Lock()
	b := &s.blocks[file][block]
	if seq > b.durable {
		b.durable = seq
	}
	keep := b.pending[:0]
	for _, p := range b.pending {
		if p > b.durable {
			keep = append(keep, p)
		}
	}
	b.pending = keep
	s.mu.Unlock()
}

func crashFile(dir string, i int) string {
	return filepath.Join(dir, "vol"+strconv.Itoa(i)+".img")
}

// crashWorker writes records to the blocks it owns (block % crashWorkers == id),
// so the writes to a block are ordered; groups of 1..4 records to one file are
// followed by fsync (or fdatasync), and only then acknowledged. It returns at the
// first error, which must come after the kill.
func crashWorker(id int, dir string, st *crashState, rng *rand.Rand, stop *atomic.Bool, killed *atomic.Bool, errc chan<- error) {
	flags := os.O_RDWR
	if id == 2 {
		flags |= syscall.O_DIRECT
	}
	var fs [crashFiles]*os.File
	for i := range fs {
		f, err := os.OpenFile(crashFile(dir, i), flags, 0)
		if err != nil {
			if !killed.Load() {
				errc <- fmt.Errorf("worker %d: open: %w", id, err)
			}
			return
		}
		defer f.Close()
		fs[i] = f
	}
	buf := alignedBuf(blockSize)
	type rec struct {
		block int
		seq   uint64
	}
	for !stop.Load() {
		file := rng.IntN(crashFiles)
		group := make([]rec, 1+rng.IntN(4))
		for i := range group {
			block := rng.IntN(crashBlocks/crashWorkers)*crashWorkers + id
			seq := st.nextSeq()
			makeRecord(buf, file, block, seq)
			st.issued(file, block, seq)
			if _, err := fs[file].WriteAt(buf, int64(block)*blockSize); err != nil {
				if !killed.Load() {
					errc <- fmt.Errorf("worker %d: write: %w", id, err)
				}
				return
			}
			group[i] = rec{block, seq}
		}
		var err error
		if id == 3 {
			err = syscall.Fdatasync(int(fs[file].Fd()))
		} else {
			err = fs[file].Sync()
		}
		if err != nil {
			if !killed.Load() {
				errc <- fmt.Errorf("worker %d: fsync: %w", id, err)
			}
			return
		}
		for _, r := range group {
			st.acked(file, r.block, r.seq)
		}
	}
}

// metaWorker creates small files, each acknowledged after fsync of the file and
// of its directory, and deletes acknowledged ones, each deletion acknowledged after
// fsync of the directory.
func metaWorker(dir string, st *crashState, rng *rand.Rand, stop *atomic.Bool, killed *atomic.Bool, errc chan<- error) {
	fail := func(err error) {
		if !killed.Load() {
			errc <- fmt.Errorf("meta worker: %w", err)
		}
	}
	d := filepath.Join(dir, "meta")
	syncDir := func() error {
		df, err := os.Open(d)
		if err != nil {
			return err
		}
		defer df.Close()
		return df.Sync()
	}
	for !stop.Load() {
		st.mu.Lock()
		victim := ""
		if len(st.files) > 50 && rng.IntN(3) == 0 {
			for name := range st.files {
				victim = name
				break
			}
			// From now on it may or may not exist until the deletion is acknowledged.
			delete(st.files, victim)
		}
		st.mu.Unlock()
		if victim != "" {
			err := os.Remove(filepath.Join(d, victim))
			if err == nil {
				err = syncDir()
			}
			if err != nil {
				fail(err)
				return
			}
			st.mu.Lock()
			st.deleted[victim] = true
			st.mu.Unlock()
			continue
		}

		seq := st.nextSeq()
		name := "f" + strconv.FormatUint(seq, 10)
		f, err := os.OpenFile(filepath.Join(d, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			fail(err)
			return
		}
		_, err = f.Write(smallFile(seq))
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = syncDir()
		}
		if err != nil {
			fail(err)
			return
		}
		st.mu.Lock()
		st.files[name] = seq
		st.mu.Unlock()
	}
}

func smallFile(seq uint64) []byte {
	b := make([]byte, 1000+int(seq%3000))
	fillPattern(b, seq, 0)
	return b
}

// verifyCrash checks every block of every volume and every acknowledged small
// file, then makes what it saw the new baseline.
func verifyCrash(t *testing.T, dir string, st *crashState, cycle int) {
	t.Helper()
	st.mu.Lock()
	defer st.mu.Unlock()
	bad := 0
	for fi := 0; fi < crashFiles; fi++ {
		p := crashFile(dir, fi)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("cycle %d: read %s: %v", cycle, p, err)
		}
		if len(data) != crashFileSize {
			t.Errorf("cycle %d: %s has size %d, want %d", cycle, p, len(data), crashFileSize)
			continue
		}
		for b := 0; b < crashBlocks; b++ {
			bs := &st.blocks[fi][b]
			seq, err := parseRecord(data[b*blockSize:(b+1)*blockSize], fi, b)
			ok := err == nil && seq == bs.durable
			for _, p := range bs.pending {
				ok = ok || (err == nil && seq == p)
			}
			if !ok {
				bad++
				if bad <= 20 {
					t.Errorf("cycle %d: %s block %d: found seq %d (err %v); want the acknowledged seq %d or an unacknowledged later one %v",
						cycle, filepath.Base(p), b, seq, err, bs.durable, bs.pending)
				}
				continue
			}
			if len(bs.pending) > 0 {
				if seq == bs.durable {
					st.unackedLost++
				} else {
					st.unackedKept++
				}
			}
			// What survived a crash is durable from now on.
			bs.durable = seq
			bs.pending = bs.pending[:0]
		}
	}
	if bad > 20 {
		t.Errorf("cycle %d: %d bad blocks in all", cycle, bad)
	}
	missing := 0
	for name, seq := range st.files {
		got, err := os.ReadFile(filepath.Join(dir, "meta", name))
		want := smallFile(seq)
		if err != nil || string(got) != string(want) {
			missing++
			if missing <= 10 {
				t.Errorf("cycle %d: acknowledged file meta/%s: err=%v len=%d, want %d bytes of seq %d", cycle, name, err, len(got), len(want), seq)
			}
		}
	}
	for name := range st.deleted {
		if _, err := os.Lstat(filepath.Join(dir, "meta", name)); !errors.Is(err, os.ErrNotExist) {
			missing++
			if missing <= 10 {
				t.Errorf("cycle %d: meta/%s was deleted (acknowledged) but stat says %v", cycle, name, err)
			}
		}
	}
	if st.clones != nil {
		verifyClones(t, dir, st.clones, cycle)
	}
	if t.Failed() {
		t.FailNow()
	}
}

func crashCycles() int {
	if s := os.Getenv("VAFS_CRASH_CYCLES"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return n
		}
	}
	return 24
}

func TestCrashConsistency(t *testing.T) {
	requireRoot(t)
	requireFsck(t)
	data, mnt := newDirs(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("VAFS_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (set VAFS_CRASH_SEED to repeat the schedule)", seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	st := &crashState{files: map[string]uint64{}, deleted: map[string]bool{}}
	m := startMount(t, data, mnt)
	for i := 0; i < crashFiles; i++ {
		f, err := os.OpenFile(crashFile(mnt, i), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(crashFileSize); err != nil {
			t.Fatal(err)
		}
		fsync(t, f)
		f.Close()
	}
	if err := os.Mkdir(m.Path("meta"), 0o755); err != nil {
		t.Fatal(err)
	}
	fsyncDir(t, mnt)
	if sysCopyFileRange >= 0 {
		st.clones = setupClones(t, mnt)
	} else {
		t.Log("copy_file_range syscall number unknown here: no clone workload")
	}

	cycles := crashCycles()
	const fsckEvery = 6
	start := time.Now()
	var acks, writes int
	for c := 1; c <= cycles; c++ {
		var stop, killed atomic.Bool
		errc := make(chan error, crashWorkers+2)
		var wg sync.WaitGroup
		for w := 0; w < crashWorkers; w++ {
			wrng := rand.New(rand.NewPCG(seed, uint64(c*100+w)))
			wg.Add(1)
			go func() { defer wg.Done(); crashWorker(w, mnt, st, wrng, &stop, &killed, errc) }()
		}
		wg.Add(1)
		mrng := rand.New(rand.NewPCG(seed, uint64(c*100+99)))
		go func() { defer wg.Done(); metaWorker(mnt, st, mrng, &stop, &killed, errc) }()
		if st.clones != nil {
			crng := rand.New(rand.NewPCG(seed, uint64(c*100+98)))
			wg.Add(1)
			go func() { defer wg.Done(); cloneWorker(mnt, st, st.clones, crng, &stop, &killed, errc) }()
		}

		time.Sleep(time.Duration(100+rng.IntN(1400)) * time.Millisecond)
		killed.Store(true)
		m.Kill()
		stop.Store(true)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("cycle %d: writers still blocked 30s after the mount was killed", c)
		}
		close(errc)
		for err := range errc {
			t.Errorf("cycle %d: before the kill: %v", c, err)
		}
		if t.Failed() {
			t.FailNow()
		}
		detachDead(t, mnt)
		if c%fsckEvery == 0 {
			checkFsck(t, data) // offline, on the crashed data dir
		}

		if c%3 == 0 {
			// Also crash while the next mount opens the data dir and recovers.
			killDuringStart(t, data, mnt, time.Duration(rng.IntN(60))*time.Millisecond)
		}
		m = startMount(t, data, mnt)
		verifyCrash(t, mnt, st, c)
		st.mu.Lock()
		acks, writes = 0, 0
		for fi := range st.blocks {
			for b := range st.blocks[fi] {
				if st.blocks[fi][b].durable != 0 {
					acks++
				}
			}
		}
		writes = int(st.seq)
		st.mu.Unlock()
		if testing.Verbose() {
			t.Logf("cycle %d ok: %d records issued, %d small files live, %d blocks hold data, %v", c, writes, len(st.files), acks, time.Since(start).Round(time.Millisecond))
		}
	}
	if writes == 0 || acks == 0 || len(st.files) == 0 {
		t.Errorf("workload made no progress: %d records issued, %d blocks with data, %d files", writes, acks, len(st.files))
	}
	// Finally a clean stop, remount, verify, fsck.
	m.Stop()
	m = startMount(t, data, mnt)
	verifyCrash(t, mnt, st, cycles+1)
	m.Stop()
	checkFsck(t, data)
	t.Logf("%d cycles, %d records issued, %d blocks hold data, %d small files live, %d deleted; blocks with unacknowledged writes at a crash: %d kept the new record, %d the acknowledged one; %v",
		cycles, writes, acks, len(st.files), len(st.deleted), st.unackedKept, st.unackedLost, time.Since(start).Round(time.Millisecond))
	if cs := st.clones; cs != nil {
		t.Logf("clones: %d made, %d live, %d deleted", cs.next, len(cs.live), len(cs.deleted))
		if cs.next == 0 {
			t.Error("the clone workload made no clone")
		}
	}
}

// TestRecordChecker checks the crash test's own checker (no mount needed).
func TestRecordChecker(t *testing.T) {
	buf := make([]byte, blockSize)
	if seq, err := parseRecord(buf, 1, 2); seq != 0 || err != nil {
		t.Errorf("zero block: %d %v", seq, err)
	}
	makeRecord(buf, 1, 2, 77)
	if seq, err := parseRecord(buf, 1, 2); seq != 77 || err != nil {
		t.Errorf("whole record: %d %v", seq, err)
	}
	if _, err := parseRecord(buf, 1, 3); err == nil {
		t.Error("record at the wrong block accepted")
	}
	torn := make([]byte, blockSize)
	makeRecord(torn, 1, 2, 78)
	copy(torn[2048:], buf[2048:])
	if _, err := parseRecord(torn, 1, 2); err == nil {
		t.Error("torn record (two halves) accepted")
	}
	half := make([]byte, blockSize)
	copy(half[:512], buf[:512])
	if _, err := parseRecord(half, 1, 2); err == nil {
		t.Error("record with a zero tail accepted")
	}
	junk := pattern(blockSize, 5, 0)
	if _, err := parseRecord(junk, 1, 2); err == nil {
		t.Error("garbage accepted")
	}
}
