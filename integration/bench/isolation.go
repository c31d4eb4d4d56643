package main

// The isolation section: does one file's I/O on a vafs mount wait for
// another's? A KVM host runs many VMs on one mount, one image each
// (issue 12). Three measurements, each a ratio of two figures from the
// same run, vafs only (no peer has one mount for all images; where a
// plain file on the host file system shows what the disk itself does, it
// is there as a reference):
//
//	neighbour fsync      A's fsync latency while B streams writes ÷ A's alone
//	compaction stall     a writer's p99.9 latency during a compaction pass ÷ without
//	parallel cold reads  the IOPS of 4 files read cold at once ÷ one file alone
//
// The figures that are latencies of single calls (A's fsync, the writer's
// 4 KiB writes) are timed by this process around the system call, on a
// file it opens O_DIRECT, as a guest's qemu with cache=none would; the
// streams and the reads are fio jobs.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// isoConfig sizes the section: about 5 minutes in full, under a minute
// with -quick.
type isoConfig struct {
	// neighbour fsync
	fsyncEvery   time.Duration // A writes and fsyncs this often
	fsyncSamples int           // A's fsyncs measured per phase
	fsyncWarm    int           // A's first fsyncs of a phase, not counted
	fsyncFile    int64         // A's file, prefilled
	streamLead   time.Duration // B runs this long before A's first fsync

	// compaction stall
	compactFill  int64         // the file the pass compacts: written, then 3/4 overwritten
	writerFile   int64         // the writer's file (sparse)
	writerRun    time.Duration // each writer run, at least
	writerWarm   time.Duration // the start of a run, not counted
	compactAt    time.Duration // `vafs compact` starts this long into the run
	compactAfter time.Duration // the run goes on at least this long after it

	// parallel cold reads
	coldSize    int64         // each of the 4 files
	coldRuntime time.Duration // a bound only: each file is read at coldShare of its blocks
}

var (
	fullIso = isoConfig{
		fsyncEvery: time.Second, fsyncSamples: 30, fsyncWarm: 3, fsyncFile: 64 << 20, streamLead: 2 * time.Second,
		compactFill: 256 << 20, writerFile: 256 << 20, writerRun: 12 * time.Second, writerWarm: time.Second,
		compactAt: 3 * time.Second, compactAfter: 2 * time.Second,
		coldSize: 1 << 30, coldRuntime: 2 * time.Minute,
	}
	quickIso = isoConfig{
		fsyncEvery: 250 * time.Millisecond, fsyncSamples: 10, fsyncWarm: 2, fsyncFile: 16 << 20, streamLead: time.Second,
		compactFill: 128 << 20, writerFile: 64 << 20, writerRun: 4 * time.Second, writerWarm: 500 * time.Millisecond,
		compactAt: 1500 * time.Millisecond, compactAfter: time.Second,
		coldSize: 128 << 20, coldRuntime: time.Minute,
	}
)

const (
	// streamRate is B's write rate: the neighbour of issue 12 and of
	// docs/write-cache.md's measurement (a backup job, a VM copying a
	// disk in), a third of what this machine's disk takes with syncs.
	// Unthrottled, B would measure how two processes share two CPUs
	// more than how vafs shares its commit.
	streamRate = 200 << 20 // bytes per second

	// isoGoal: each ratio within 2× (cold reads: at least 2×).
	isoGoal = 2.0

	// vafsCompactEvery is the background compaction's interval (fs:
	// compactEvery). The measured pass must be the explicit one, so the
	// compaction run is placed between two background passes.
	vafsCompactEvery = 30 * time.Second

	// overwriteChunk, overwriteSkip: the compacted file is overwritten
	// in 192 KiB pieces, every 256 KiB: a quarter of each segment stays
	// live, under the half that makes it a victim.
	overwriteChunk = 192 << 10
	overwriteSkip  = 64 << 10
)

type isoResult struct {
	neighbour []*neighbourResult
	compact   *compactResult
	cold      []*coldResult
}

func runIsolationSection(ctx context.Context, cfg *config, td *teardown) (*sectionOut, error) {
	out := &sectionOut{title: "Isolation: one file's I/O beside another's on the same mount", method: isoMethod(cfg)}
	if err := checkCLI(ctx, cfg, "compact"); err != nil {
		return out, err
	}
	res := &isoResult{}
	var errs []error
	steps := []struct {
		name string
		fn   func() error
	}{
		{"neighbour fsync", func() error { return isoNeighbour(ctx, cfg, td, res) }},
		{"compaction stall", func() error { return isoCompact(ctx, cfg, td, res) }},
		{"parallel cold reads", func() error { return isoCold(ctx, cfg, td, res) }},
	}
	for _, s := range steps {
		if err := s.fn(); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			logf("isolation: %s: %v", s.name, err)
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
		}
	}
	out.results = renderIsolation(cfg, res)
	return out, errors.Join(errs...)
}

// isoDir makes the work directory of one measurement and a teardown of
// its own, registered on td; done runs that teardown and removes the
// directory (unless -keep).
func isoDir(cfg *config, td *teardown, key string) (dir string, sub *teardown, done func(*error), err error) {
	dir = filepath.Join(cfg.workDir, "isolation", key)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, nil, err
	}
	sub = &teardown{}
	td.add("isolation "+key, sub.run)
	done = func(errp *error) {
		if terr := sub.run(); terr != nil && *errp == nil {
			*errp = terr
		}
		if !cfg.keep {
			if rerr := os.RemoveAll(dir); rerr != nil && *errp == nil {
				*errp = rerr
			}
		}
	}
	return dir, sub, done, nil
}

// isoTargets are where the files of a measurement live: a fresh vafs
// mount, and the plain file system of the work directory as the reference.
var isoTargets = []string{"vafs", "plain"}

// filesOn returns the directory the measurement's files go in: the mount
// point of a fresh vafs mount under dir, or dir itself for plain.
func filesOn(ctx context.Context, cfg *config, kind, dir, name string, sub *teardown) (string, *vafsMount, error) {
	if kind == "plain" {
		return dir, nil, nil
	}
	m, err := mountVafs(ctx, cfg, filepath.Join(dir, "vafs"), "vafs ("+name+")", sub)
	if err != nil {
		return "", nil, err
	}
	return m.mnt, m, nil
}

// --- neighbour fsync -------------------------------------------------------

type neighbourResult struct {
	kind          string
	alone, beside samples // A's fsync latencies
	streamMiBs    float64 // what B wrote per second while A measured beside it
	err           error
}

func isoNeighbour(ctx context.Context, cfg *config, td *teardown, res *isoResult) error {
	var errs []error
	for _, kind := range isoTargets {
		r := &neighbourResult{kind: kind}
		res.neighbour = append(res.neighbour, r)
		r.err = neighbourAt(ctx, cfg, td, r)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", kind, r.err))
		}
	}
	return errors.Join(errs...)
}

func neighbourAt(ctx context.Context, cfg *config, td *teardown, r *neighbourResult) (err error) {
	iso := cfg.iso
	dir, sub, done, err := isoDir(cfg, td, "fsync-"+r.kind)
	if err != nil {
		return err
	}
	defer done(&err)
	files, _, err := filesOn(ctx, cfg, r.kind, dir, "isolation fsync", sub)
	if err != nil {
		return err
	}
	a, b := filepath.Join(files, "a.raw"), filepath.Join(files, "b.raw")
	if err := fill(ctx, dir, "fill-a", a, iso.fsyncFile); err != nil {
		return err
	}

	logf("isolation: neighbour fsync, %s: A alone (%d fsyncs, one every %s)", r.kind, iso.fsyncWarm+iso.fsyncSamples, iso.fsyncEvery)
	if r.alone, err = fsyncLoop(ctx, a, iso); err != nil {
		return fmt.Errorf("A alone: %w", err)
	}

	// B's file has the size it will be written to, as a VM's image has
	// its virtual size from the start: its writes are not appends.
	runtime := iso.streamLead + 2*time.Duration(iso.fsyncWarm+iso.fsyncSamples)*iso.fsyncEvery + 10*time.Second
	if err := makeSparse(b, streamRate*int64(runtime/time.Second+1)); err != nil {
		return err
	}
	logf("isolation: neighbour fsync, %s: A beside B (%d MiB/s of sequential 1M writes)", r.kind, streamRate>>20)
	bg, err := startFio(ctx, dir, "stream", append(streamArgs(runtime), "--filename="+b), sub)
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, iso.streamLead); err != nil {
		return err
	}
	lat, aerr := fsyncLoop(ctx, a, iso)
	out, berr := bg.stop()
	if aerr != nil {
		return fmt.Errorf("A beside B: %w", aerr)
	}
	if berr != nil {
		return fmt.Errorf("B: %w", berr)
	}
	r.beside = lat
	r.streamMiBs = float64(out.Jobs[0].Write.BWBytes) / (1 << 20)
	return nil
}

// streamArgs are B's: sequential 1M direct writes at streamRate, for at
// most runtime (B is stopped once A is done).
func streamArgs(runtime time.Duration) []string {
	return []string{
		"--name=stream",
		"--rw=write",
		"--bs=1M",
		"--ioengine=psync",
		"--iodepth=1",
		"--direct=1",
		"--rate=" + strconv.Itoa(streamRate>>20) + "m",
		"--time_based",
		"--runtime=" + seconds(runtime),
	}
}

// fsyncLoop is A: every iso.fsyncEvery a 4 KiB write at a random block of
// path, then an fsync, timed; the first iso.fsyncWarm are not counted. An
// fsync slower than the period delays the next one, never overlaps it.
func fsyncLoop(ctx context.Context, path string, iso isoConfig) (samples, error) {
	f, err := openDirect(path, 1)
	if err != nil {
		return nil, err
	}
	defer f.close()
	var lat samples
	start := time.Now()
	for i := 0; i < iso.fsyncWarm+iso.fsyncSamples; i++ {
		if err := sleepCtx(ctx, time.Until(start.Add(time.Duration(i)*iso.fsyncEvery))); err != nil {
			return lat, err
		}
		if _, err := f.write(); err != nil {
			return lat, err
		}
		t0 := time.Now()
		if err := syscall.Fsync(f.fd); err != nil {
			return lat, fmt.Errorf("fsync %s: %w", path, err)
		}
		if i >= iso.fsyncWarm {
			lat = append(lat, time.Since(t0))
		}
	}
	return lat, nil
}

// --- compaction stall ------------------------------------------------------

type compactResult struct {
	base, pass     []timedWrite  // the writer's writes without and with the pass
	passFrom       time.Duration // `vafs compact` ran from passFrom to passTo (into the run)
	passTo         time.Duration
	moved, segs    int64  // blocks moved and segments compacted, as `vafs compact` says
	compactOut     string // its output
	expectedBlocks int64  // live blocks of the victims, as written
	gapWaited      time.Duration
}

// timedWrite is one 4 KiB write of the writer: when it started (since the
// start of the run) and how long it took.
type timedWrite struct{ at, lat time.Duration }

func isoCompact(ctx context.Context, cfg *config, td *teardown, res *isoResult) (err error) {
	iso := cfg.iso
	dir, sub, done, err := isoDir(cfg, td, "compact")
	if err != nil {
		return err
	}
	defer done(&err)
	mountFrom := time.Now()
	m, err := mountVafs(ctx, cfg, filepath.Join(dir, "vafs"), "vafs (isolation compact)", sub)
	if err != nil {
		return err
	}
	mountTo := time.Now()
	r := &compactResult{expectedBlocks: iso.compactFill / 4 / 4096}
	res.compact = r
	c, d := filepath.Join(m.mnt, "c.raw"), filepath.Join(m.mnt, "d.raw")
	if err := makeSparse(c, iso.writerFile); err != nil {
		return err
	}
	logf("isolation: compaction stall: writing %s", sizeString(iso.compactFill))
	if err := fill(ctx, dir, "fill-d", d, iso.compactFill); err != nil {
		return err
	}

	// Without the pass first: nothing is yet there to compact, so no
	// background pass can run into it either.
	logf("isolation: compaction stall: the writer alone (%s)", iso.writerRun)
	if r.base, _, _, _, err = writerRun(ctx, cfg, c, m.mnt, false); err != nil {
		return fmt.Errorf("writer alone: %w", err)
	}

	// Overwrite and compact between two background passes, so the pass
	// measured is the explicit one, on segments the overwrite just left
	// less than half live.
	need := 10*time.Second + iso.compactAt
	if r.gapWaited, err = awaitCompactorGap(ctx, mountFrom, mountTo, need); err != nil {
		return err
	}
	logf("isolation: compaction stall: overwriting 3/4 of it")
	if _, err := fioRun(ctx, dir, "overwrite", d, overwriteArgs(iso.compactFill), 10*time.Minute); err != nil {
		return err
	}
	logf("isolation: compaction stall: the writer with `vafs compact` %s into its run", iso.compactAt)
	r.pass, r.passFrom, r.passTo, r.compactOut, err = writerRun(ctx, cfg, c, m.mnt, true)
	if err != nil {
		return fmt.Errorf("writer with compaction: %w", err)
	}
	if _, err := fmt.Sscanf(strings.TrimSpace(r.compactOut), "compacted %d segments, moved %d blocks", &r.segs, &r.moved); err != nil {
		return fmt.Errorf("vafs compact said %q: %w", r.compactOut, err)
	}
	if r.moved == 0 {
		return fmt.Errorf("vafs compact moved nothing (%q): a background pass may have compacted first", strings.TrimSpace(r.compactOut))
	}
	return nil
}

// overwriteArgs overwrite 3/4 of a file of size bytes written before: 192
// KiB of every 256 KiB, once each.
func overwriteArgs(size int64) []string {
	return []string{
		"--name=overwrite",
		"--rw=write:" + strconv.Itoa(overwriteSkip>>10) + "k",
		"--bs=" + strconv.Itoa(overwriteChunk>>10) + "k",
		"--ioengine=psync",
		"--iodepth=1",
		"--direct=1",
		"--size=" + strconv.FormatInt(size, 10),
		"--io_size=" + strconv.FormatInt(size/(overwriteChunk+overwriteSkip)*overwriteChunk, 10),
		"--end_fsync=1",
	}
}

// awaitCompactorGap returns once no background compaction pass can start
// within the next need. The mount's compactor ticks every
// vafsCompactEvery from some moment between mountFrom and mountTo.
func awaitCompactorGap(ctx context.Context, mountFrom, mountTo time.Time, need time.Duration) (time.Duration, error) {
	var waited time.Duration
	for {
		now := time.Now()
		// The first tick that may still be to come.
		k := int64(1)
		if since := now.Sub(mountTo); since > 0 {
			k = int64(since/vafsCompactEvery) + 1
		}
		earliest := mountFrom.Add(time.Duration(k) * vafsCompactEvery)
		if now.Add(need).Before(earliest) {
			return waited, nil
		}
		if need >= vafsCompactEvery-mountTo.Sub(mountFrom) {
			return waited, fmt.Errorf("a run of %s cannot fit between two background compaction passes", need)
		}
		// Until tick k has surely been.
		wait := time.Until(mountTo.Add(time.Duration(k)*vafsCompactEvery + 500*time.Millisecond))
		logf("isolation: compaction stall: waiting %s for the background compaction pass to go by", wait.Round(100*time.Millisecond))
		if err := sleepCtx(ctx, wait); err != nil {
			return waited, err
		}
		waited += wait
	}
}

// writerRun runs the writer on file for iso.writerRun: 4 KiB O_DIRECT
// writes at random blocks, one at a time, each timed. With compact it
// runs `vafs compact MNT` iso.compactAt into the run, and goes on at least
// iso.compactAfter after it returned.
func writerRun(ctx context.Context, cfg *config, file, mnt string, compact bool) (ws []timedWrite, from, to time.Duration, out string, err error) {
	iso := cfg.iso
	f, err := openDirect(file, 2)
	if err != nil {
		return nil, 0, 0, "", err
	}
	defer f.close()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	start := time.Now()
	var werr error
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		ws = make([]timedWrite, 0, 1<<16)
		for wctx.Err() == nil {
			at := time.Since(start)
			lat, err := f.write()
			if err != nil {
				werr = err
				return
			}
			ws = append(ws, timedWrite{at, lat})
		}
	}()
	end := start.Add(iso.writerRun)
	if compact {
		if err = sleepCtx(ctx, time.Until(start.Add(iso.compactAt))); err == nil {
			from = time.Since(start)
			out, err = runCmd(ctx, 10*time.Minute, cfg.vafsBin, "compact", mnt)
			to = time.Since(start)
			if later := start.Add(to + iso.compactAfter); later.After(end) {
				end = later
			}
		}
	}
	if err == nil {
		err = sleepCtx(ctx, time.Until(end))
	}
	stop()
	<-wdone
	if err == nil {
		err = werr
	}
	return ws, from, to, out, err
}

// latStats are the latencies of the writes that overlap [from, to].
type latStats struct {
	n              int
	p50, p999, max time.Duration
}

func writeStats(ws []timedWrite, from, to time.Duration) latStats {
	var s samples
	for _, w := range ws {
		if w.at <= to && w.at+w.lat >= from {
			s = append(s, w.lat)
		}
	}
	return latStats{n: len(s), p50: s.percentile(50), p999: s.percentile(99.9), max: s.max()}
}

// --- parallel cold reads ---------------------------------------------------

const coldFiles = 4

type coldResult struct {
	kind        string
	alone, four float64 // IOPS: one file alone, the sum of 4 files at once
	err         error
}

// coldRow is the read of one file: 4 KiB random reads at queue depth 16.
var coldRow = row{rw: "randread", bs: "4k", engine: "libaio", iodepth: 16}

// coldShare is the share of each file's blocks a cold read reads: the
// same in both phases, whatever their IOPS.
//
// The reads used to run for a fixed time. vafs reads its segment files
// through the host page cache, and one 4 KiB block read from disk brings
// in two pages (a record is 4136 bytes), parts of its neighbours too: in
// 8 s alone, one file at ~30,000 IOPS was read nearly whole, and the later
// reads of the alone phase were mostly cache hits (4.2 KiB read from disk
// per 4 KiB read), while the 4 files at once were each read at a tenth
// (9.0 KiB per read). Alone then measured the page cache, and the ratio
// compared warm reads with cold ones. fio's random map reads each block at
// most once, so with the same share of each file read, every read in both
// phases is of a block not read before, and as likely to find a
// neighbour's page cached. O_DIRECT on the plain file system has no such
// effect, but is measured the same way.
const coldShare = 4

// coldIOs is how many reads each file gets.
func coldIOs(iso isoConfig) int64 { return iso.coldSize / 4096 / coldShare }

// coldConfig is cfg with the size and time bound of the cold reads, and no
// ramp: the first reads are the coldest, and they are what is measured.
func coldConfig(cfg *config) *config {
	c := *cfg
	c.size, c.runtime, c.ramp = cfg.iso.coldSize, cfg.iso.coldRuntime, 0
	return &c
}

// coldArgs are jobArgs of the cold read for n reads per job: not time
// based, --runtime is only a bound.
func coldArgs(cc *config, n int64) []string {
	var args []string
	for _, a := range jobArgs(cc, coldRow) {
		if a == "--time_based" {
			a = "--number_ios=" + strconv.FormatInt(n, 10)
		}
		args = append(args, a)
	}
	return args
}

// coldMultiArgs are multiJobArgs of the cold read, as coldArgs.
func coldMultiArgs(cc *config, n int64, files []string) []string {
	args := coldArgs(cc, n)[1:] // without --name
	args = append(args, "--group_reporting")
	for i, f := range files {
		args = append(args, fmt.Sprintf("--name=%s-%d", coldRow.id(), i), "--filename="+f)
	}
	return args
}

func isoCold(ctx context.Context, cfg *config, td *teardown, res *isoResult) error {
	var errs []error
	for _, kind := range isoTargets {
		r := &coldResult{kind: kind}
		res.cold = append(res.cold, r)
		r.err = coldAt(ctx, cfg, td, r)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", kind, r.err))
		}
	}
	return errors.Join(errs...)
}

func coldAt(ctx context.Context, cfg *config, td *teardown, r *coldResult) (err error) {
	iso := cfg.iso
	dir, sub, done, err := isoDir(cfg, td, "cold-"+r.kind)
	if err != nil {
		return err
	}
	defer done(&err)
	filesDir, m, err := filesOn(ctx, cfg, r.kind, dir, "isolation cold", sub)
	if err != nil {
		return err
	}
	files := make([]string, coldFiles)
	for i := range files {
		files[i] = filepath.Join(filesDir, fmt.Sprintf("r%d.raw", i))
	}
	logf("isolation: cold reads, %s: writing %d files of %s", r.kind, coldFiles, sizeString(iso.coldSize))
	for i, f := range files {
		if err := fill(ctx, dir, fmt.Sprintf("fill-%d", i), f, iso.coldSize); err != nil {
			return err
		}
	}
	cc := coldConfig(cfg)
	// cold: a new mount (vafs keeps tree nodes and segment readers in its
	// own memory), and no page cache.
	cold := func() error {
		if m != nil {
			var err error
			if m, err = m.remount(ctx, cfg, "vafs (isolation cold)", sub); err != nil {
				return err
			}
		}
		dropCaches()
		return nil
	}
	n := coldIOs(iso)
	iops := func(out *fioOutput, files int) (float64, error) {
		if len(out.Jobs) != 1 {
			return 0, fmt.Errorf("fio reported %d jobs, want 1 (--group_reporting)", len(out.Jobs))
		}
		if e := out.Jobs[0].Error; e != 0 {
			return 0, fmt.Errorf("fio job error %d (%s)", e, syscall.Errno(e))
		}
		if out.Jobs[0].Read.IOPS == 0 {
			return 0, errors.New("fio measured no reads")
		}
		// Stopped by the time bound: the phases did not read the same
		// share of their files.
		if got, want := out.Jobs[0].Read.TotalIOs, n*int64(files); got != want {
			return 0, fmt.Errorf("fio made %d reads in its %s bound, want %d", got, iso.coldRuntime, want)
		}
		return out.Jobs[0].Read.IOPS, nil
	}
	timeout := iso.coldRuntime + 5*time.Minute

	logf("isolation: cold reads, %s: one file alone", r.kind)
	if err := cold(); err != nil {
		return err
	}
	out, err := fioExec(ctx, dir, "alone", append(coldArgs(cc, n), "--group_reporting", "--filename="+files[0]), timeout)
	if err != nil {
		return err
	}
	if r.alone, err = iops(out, 1); err != nil {
		return err
	}

	logf("isolation: cold reads, %s: %d files at once", r.kind, coldFiles)
	if err := cold(); err != nil {
		return err
	}
	if out, err = fioExec(ctx, dir, "four", coldMultiArgs(cc, n, files), timeout); err != nil {
		return err
	}
	r.four, err = iops(out, coldFiles)
	return err
}

// --- report ----------------------------------------------------------------

func isoMethod(cfg *config) string {
	iso := cfg.iso
	cc := coldConfig(cfg)
	var b strings.Builder
	fmt.Fprintf(&b, "A KVM host runs many VMs on one vafs mount, one image (file) each; this section measures whether one "+
		"file's I/O waits for another's (issue 12). Each figure is a ratio of two measurements made in the same run on the same "+
		"kind of mount, so the disk and the machine's load of the moment cancel out as far as they can. vafs only: no peer "+
		"serves every image from one mount and one commit. Where the host file system shows what the disk itself does to the "+
		"same pattern, the same files on the plain file system of the work directory are measured as a reference (`plain`). "+
		"Every vafs measurement has a fresh mount (`vafs mount --background`, default options) of its own. The 4 KiB writes and "+
		"fsyncs whose latencies are figures are made by this process itself (pwrite, fsync; timed around the call) on a file "+
		"opened `O_DIRECT`, as qemu with `cache=none` opens an image; the streams and reads are fio jobs.\n\n")

	fmt.Fprintf(&b, "**Neighbour fsync.** File A (%s, prefilled) gets a 4 KiB write at a random block and an fsync every %s; "+
		"the fsync is timed. File B, on the same mount, is a sparse file of the size it will be written to (as a VM image is), "+
		"streamed with sequential 1M writes at %d MiB/s for the whole measurement:\n\n",
		sizeString(iso.fsyncFile), iso.fsyncEvery, streamRate>>20)
	fmt.Fprintf(&b, "    fio %s --filename=B --output-format=json\n\n", strings.Join(streamArgs(time.Minute), " "))
	fmt.Fprintf(&b, "(`--runtime` is a bound; B is stopped with SIGTERM once A is done, and starts %s before A.) "+
		"A runs %d fsyncs alone, then %d with B running; the first %d of each are not counted, so each figure is over %d fsyncs, "+
		"and their p99 is the slowest of them (nearest rank). The ratio is A's fsync latency with B ÷ A alone, p50 and p99. "+
		"The rate is fixed so that B is the same neighbour on every target (unthrottled, B would measure how two processes share "+
		"two CPUs); %d MiB/s is the neighbour of docs/write-cache.md. An fsync every %s gives %d samples in %s; every 10 s (what "+
		"docs/write-cache.md measured) would give B ten times as long to fill vafs's write-back cache between two of A's fsyncs, "+
		"and %d samples alone and beside B would take %s, more than the budget of this section. On the plain file system B's "+
		"file is sparse too, so its writes allocate blocks as they go.\n\n",
		iso.streamLead, iso.fsyncWarm+iso.fsyncSamples, iso.fsyncWarm+iso.fsyncSamples, iso.fsyncWarm, iso.fsyncSamples,
		streamRate>>20, iso.fsyncEvery, iso.fsyncSamples, time.Duration(iso.fsyncSamples)*iso.fsyncEvery,
		iso.fsyncSamples, 2*time.Duration(iso.fsyncSamples)*10*time.Second)

	fmt.Fprintf(&b, "**Compaction stall.** On one mount: file D is written once (%s, sequential 1M writes, fsync), file C is a "+
		"sparse %s file. A writer makes 4 KiB `O_DIRECT` writes at random blocks of C, one at a time (qd1), timing each, for %s; "+
		"its first %s is not counted; C is never fsynced, so its writes are taken by vafs's write-back cache and what they can "+
		"wait for is vafs itself, not the disk. That run is the baseline. Then D is overwritten in 192 KiB pieces every 256 KiB, so each of "+
		"its segments keeps a quarter of its blocks live, less than the half that makes it a compaction victim:\n\n",
		sizeString(iso.compactFill), sizeString(iso.writerFile), iso.writerRun, iso.writerWarm)
	fmt.Fprintf(&b, "    fio %s --filename=D\n\n", strings.Join(overwriteArgs(iso.compactFill), " "))
	fmt.Fprintf(&b, "and the writer runs again, with `vafs compact MNT` started %s into the run (it moves the live quarter, "+
		"%s, and removes the victims; its output below says what it moved); the run goes on at least %s after the command "+
		"returned. The figure is the p99.9 latency of the writes that overlap the command (from its start to its exit) ÷ the "+
		"baseline's p99.9, over its whole run: what a guest's write sees while a pass runs, against what it sees otherwise. A "+
		"pass that stops writers stalls one write at qd1 for as long as it holds them, and p99.9 counts writes: that one write "+
		"weighs little among the thousands the window holds before and after the stall (the command's start-up, the commit "+
		"after the moves). So the longest write is given too, and the p99.9 over the whole run with the pass. The "+
		"mount also compacts by itself every 30 s, when a segment's count is under half: the overwrite and the pass are placed "+
		"between two of those background passes (waiting for one to go by if need be), so the pass measured is the explicit one.\n\n",
		iso.compactAt, sizeString(iso.compactFill/4), iso.compactAfter)

	files := make([]string, coldFiles)
	for i := range files {
		files[i] = fmt.Sprintf("R%d", i)
	}
	fmt.Fprintf(&b, "**Parallel cold reads.** %d files of %s, written one after the other (sequential 1M writes, fsync). "+
		"Cold: vafs is unmounted and mounted again (its tree nodes and open segments are in its own memory), then "+
		"`sync; echo 3 > /proc/sys/vm/drop_caches`; plain: the drop only. One file alone:\n\n",
		coldFiles, sizeString(iso.coldSize))
	fmt.Fprintf(&b, "    fio %s --group_reporting --filename=R0 --output-format=json\n\n", strings.Join(coldArgs(cc, coldIOs(iso)), " "))
	fmt.Fprintf(&b, "then, cold again, all %d at once, one job each (the figure is their reads ÷ the time until the last "+
		"one finished):\n\n", coldFiles)
	fmt.Fprintf(&b, "    fio %s --output-format=json\n\n", strings.Join(coldMultiArgs(cc, coldIOs(iso), files), " "))
	fmt.Fprintf(&b, "No ramp: the first reads are the coldest. Each file is read at 1/%d of its blocks (fio's random map "+
		"reads no block twice), in both phases: vafs reads its segments through the host page cache and a block read from "+
		"disk brings in parts of its neighbours, so a phase that read more of a file (a fixed time at higher IOPS) would "+
		"find more of it cached; `--runtime` is only a bound, and a run it stops is an error. The ratio is the IOPS of %d "+
		"at once ÷ one alone: at 1× the files' reads take turns; the goal, ≥ %.0f× on this 2-core machine, needs them to "+
		"overlap. The plain files show what the disk gives at 4× the queue depth.\n", coldShare, coldFiles, isoGoal)
	return b.String()
}

func renderIsolation(cfg *config, res *isoResult) string {
	var b strings.Builder
	ratio := func(a, base time.Duration) (string, float64) {
		if a <= 0 || base <= 0 {
			return "–", math.NaN()
		}
		f := float64(a) / float64(base)
		return fmt.Sprintf("%.2f×", f), f
	}
	pair := func(s samples) string {
		if len(s) == 0 {
			return "–"
		}
		return fmt.Sprintf("%s / %s", fmtDur(s.percentile(50)), fmtDur(s.percentile(99)))
	}

	// Neighbour fsync.
	fmt.Fprintf(&b, "**Neighbour fsync** (A: 4 KiB write + fsync every %s; B: sequential 1M writes at %d MiB/s):\n\n",
		cfg.iso.fsyncEvery, streamRate>>20)
	header := []string{"files on", "A's fsync alone p50 / p99", "A's fsync beside B p50 / p99", "p50 ratio", "p99 ratio",
		"B's rate", "A's slowest alone / beside B"}
	var body [][]string
	var goals []string
	for _, r := range res.neighbour {
		name := r.kind
		if name == "plain" {
			name = "plain (reference)"
		}
		r50, f50 := ratio(r.beside.percentile(50), r.alone.percentile(50))
		r99, f99 := ratio(r.beside.percentile(99), r.alone.percentile(99))
		rate := "–"
		if r.streamMiBs > 0 {
			rate = fmt.Sprintf("%.0f MiB/s", r.streamMiBs)
		}
		slow := "–"
		if len(r.alone) != 0 && len(r.beside) != 0 {
			slow = fmt.Sprintf("%s / %s", fmtDur(r.alone.max()), fmtDur(r.beside.max()))
		}
		if r.err != nil && len(r.beside) == 0 {
			r50, r99 = "failed", "failed"
		}
		body = append(body, []string{name, pair(r.alone), pair(r.beside), r50, r99, rate, slow})
		if r.kind == "vafs" {
			measured := !math.IsNaN(f50) && !math.IsNaN(f99)
			goals = append(goals, fmt.Sprintf("neighbour fsync ≤ %.0f×: p50 %s, p99 %s", isoGoal,
				verdict(measured, f50 <= isoGoal), verdict(measured, f99 <= isoGoal)))
		}
	}
	b.WriteString(mdTable(header, body))
	beside := map[string]samples{}
	for _, r := range res.neighbour {
		beside[r.kind] = r.beside
	}
	if v, p := beside["vafs"], beside["plain"]; len(v) != 0 && len(p) != 0 {
		r50, _ := ratio(v.percentile(50), p.percentile(50))
		r99, _ := ratio(v.percentile(99), p.percentile(99))
		fmt.Fprintf(&b, "\nBeside B, A's fsync on vafs ÷ on the plain file: p50 %s, p99 %s (what vafs adds to what the disk "+
			"and the host file system do with the same neighbour).\n", r50, r99)
	}

	// Compaction stall.
	if r := res.compact; r != nil && len(r.base) != 0 {
		fmt.Fprintf(&b, "\n**Compaction stall** (4 KiB `O_DIRECT` writes at qd1 on C while `vafs compact` moves D's live blocks):\n\n")
		warm := cfg.iso.writerWarm
		base := writeStats(r.base, warm, math.MaxInt64)
		header := []string{"writes of C", "writes", "p50", "p99.9", "max", "p99.9 ÷ baseline"}
		line := func(name string, s latStats) []string {
			rr, _ := ratio(s.p999, base.p999)
			if s.n == 0 {
				return []string{name, "0", "–", "–", "–", "–"}
			}
			return []string{name, thousands(float64(s.n)), fmtDur(s.p50), fmtDur(s.p999), fmtDur(s.max), rr}
		}
		body := [][]string{line("baseline: no compaction, whole run", base)}
		var f float64 = math.NaN()
		var during latStats
		if len(r.pass) != 0 && r.passTo > 0 {
			during = writeStats(r.pass, r.passFrom, r.passTo)
			_, f = ratio(during.p999, base.p999)
			body = append(body, line("during `vafs compact`", during), line("whole run with the pass", writeStats(r.pass, warm, math.MaxInt64)))
		}
		b.WriteString(mdTable(header, body))
		if r.passTo > 0 {
			fmt.Fprintf(&b, "\n`vafs compact` ran %s (from %s into the run): %q; expected to move %s blocks (%s), the live quarter of D.",
				fmtDur(r.passTo-r.passFrom), fmtDur(r.passFrom), strings.TrimSpace(r.compactOut),
				thousands(float64(r.expectedBlocks)), bytesString(r.expectedBlocks*4096))
			if r.gapWaited > 0 {
				fmt.Fprintf(&b, " Waited %s for a background pass to go by first.", fmtDur(r.gapWaited))
			}
			b.WriteString("\n")
		}
		// p99.9 counts writes: a pass that stops the writer stalls one
		// write, however long, so the longest one is said beside it.
		g := fmt.Sprintf("compaction stall p99.9 ≤ %.0f×: %s", isoGoal, verdict(!math.IsNaN(f) && r.moved > 0, f <= isoGoal))
		if during.n != 0 {
			mr, _ := ratio(during.max, base.p999)
			g += fmt.Sprintf(" (longest write during the pass: %s, %s the baseline's p99.9)", fmtDur(during.max), mr)
		}
		goals = append(goals, g)
	} else {
		goals = append(goals, fmt.Sprintf("compaction stall p99.9 ≤ %.0f×: not measured", isoGoal))
	}

	// Cold reads.
	fmt.Fprintf(&b, "\n**Parallel cold reads** (4k randread, libaio qd16, `O_DIRECT`, per file, IOPS):\n\n")
	header = []string{"files on", "one file alone", fmt.Sprintf("%d files at once (sum)", coldFiles), "ratio"}
	body = nil
	for _, r := range res.cold {
		name := r.kind
		if name == "plain" {
			name = "plain (reference)"
		}
		alone, four, rr := "–", "–", "–"
		if r.alone > 0 {
			alone = thousands(r.alone)
		}
		if r.four > 0 {
			four = thousands(r.four)
		}
		if r.alone > 0 && r.four > 0 {
			rr = fmt.Sprintf("%.2f×", r.four/r.alone)
		}
		if r.err != nil && rr == "–" {
			rr = "failed"
		}
		body = append(body, []string{name, alone, four, rr})
		if r.kind == "vafs" {
			measured := r.alone > 0 && r.four > 0
			goals = append(goals, fmt.Sprintf("parallel cold reads ≥ %.0f×: %s", isoGoal, verdict(measured, measured && r.four/r.alone >= isoGoal)))
		}
	}
	b.WriteString(mdTable(header, body))
	fmt.Fprintf(&b, "\nGoals (issue 12, vafs): %s.\n", strings.Join(goals, "; "))
	return b.String()
}

// --- helpers ---------------------------------------------------------------

// percentile is the nearest-rank p-th percentile (0 for no samples): the
// smallest sample with at least p% of the samples at or below it.
func (s samples) percentile(p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := append(samples(nil), s...)
	slices.Sort(c)
	// The epsilon keeps float error (99.9 × 10000 / 100 = 9990.000…2)
	// from moving the rank up by one.
	rank := int(math.Ceil(p*float64(len(c))/100 - 1e-9))
	return c[min(max(rank, 1), len(c))-1]
}

// directFile is a file opened O_DIRECT for 4 KiB writes at random blocks
// from an aligned buffer.
type directFile struct {
	path   string
	fd     int
	buf    []byte
	blocks int64
	rng    *rand.Rand
	seq    uint64
}

// openDirect opens path (which must exist, at least 4 KiB long); seed
// picks the blocks, so runs of a measurement write the same ones.
func openDirect(path string, seed uint64) (*directFile, error) {
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_DIRECT|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s O_DIRECT: %w", path, err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	if st.Size < 4096 {
		syscall.Close(fd)
		return nil, fmt.Errorf("%s: %d bytes, want at least 4096", path, st.Size)
	}
	// O_DIRECT wants an aligned buffer: a page of its own.
	buf, err := syscall.Mmap(-1, 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		syscall.Close(fd)
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0x15014710))
	for i := 0; i+8 <= len(buf); i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], rng.Uint64())
	}
	return &directFile{path: path, fd: fd, buf: buf, blocks: st.Size / 4096, rng: rng}, nil
}

// write writes 4 KiB (a new sequence number in front, so no two writes
// carry the same bytes) at a random block and returns how long it took.
func (f *directFile) write() (time.Duration, error) {
	f.seq++
	binary.LittleEndian.PutUint64(f.buf, f.seq)
	off := f.rng.Int64N(f.blocks) * 4096
	t0 := time.Now()
	n, err := syscall.Pwrite(f.fd, f.buf, off)
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("pwrite %s at %d: %w", f.path, off, err)
	}
	if n != len(f.buf) {
		return d, fmt.Errorf("pwrite %s at %d: wrote %d of %d bytes", f.path, off, n, len(f.buf))
	}
	return d, nil
}

func (f *directFile) close() {
	syscall.Munmap(f.buf)
	syscall.Close(f.fd)
}

// makeSparse creates path with size bytes and no data.
func makeSparse(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// sleepCtx sleeps for d (nothing if d ≤ 0), or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// bgFio is a fio job running beside a measurement, stopped when it is
// done.
type bgFio struct {
	outPath string
	cancel  context.CancelFunc
	done    chan struct{}
	err     error // Wait's
	output  *bytes.Buffer
	once    sync.Once
	stopped bool // stop found it still running
}

// startFio starts fio with args (which name the file) in the background;
// its JSON output goes to outDir/fio-ID.json. Its stop is registered on
// sub, for when the measurement fails before stopping it.
func startFio(ctx context.Context, outDir, id string, args []string, sub *teardown) (*bgFio, error) {
	outPath := filepath.Join(outDir, "fio-"+id+".json")
	cctx, cancel := context.WithCancel(ctx)
	cmd := command(cctx, "fio", append(append([]string(nil), args...), "--output-format=json", "--output="+outPath)...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start fio: %w", err)
	}
	bg := &bgFio{outPath: outPath, cancel: cancel, done: make(chan struct{}), output: &buf}
	go func() {
		bg.err = cmd.Wait()
		close(bg.done)
	}()
	// Its error, if any, was the measurement's to report.
	sub.add("fio "+id, func() error { bg.stop(); return nil })
	return bg, nil
}

// stop ends the job (SIGTERM: fio stops its jobs and still writes its
// report) and returns that report. A job that had ended by itself before
// stop is an error: it did not run for the whole measurement.
func (bg *bgFio) stop() (*fioOutput, error) {
	bg.once.Do(func() {
		select {
		case <-bg.done:
		default:
			bg.stopped = true
		}
		bg.cancel()
		<-bg.done
	})
	if !bg.stopped {
		return nil, fmt.Errorf("fio ended before the measurement did: %v: %s", bg.err, tail(bg.output.String(), 400))
	}
	out, err := decodeFio(bg.outPath)
	if err != nil {
		return nil, fmt.Errorf("%w (fio: %v: %s)", err, bg.err, tail(bg.output.String(), 400))
	}
	if len(out.Jobs) != 1 {
		return nil, fmt.Errorf("fio reported %d jobs, want 1", len(out.Jobs))
	}
	if e := out.Jobs[0].Error; e != 0 {
		return nil, fmt.Errorf("fio job error %d (%s)", e, syscall.Errno(e))
	}
	return out, nil
}
