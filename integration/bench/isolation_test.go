package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestPercentileIsNearestRank(t *testing.T) {
	var s samples
	for i := 30; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{
		{50, 15 * time.Millisecond},
		{99, 30 * time.Millisecond}, // of 30 samples, p99 is the slowest
		{99.9, 30 * time.Millisecond},
		{1, time.Millisecond},
		{0, time.Millisecond},
		{100, 30 * time.Millisecond},
	} {
		if got := s.percentile(c.p); got != c.want {
			t.Errorf("p%v of 1..30 ms = %v, want %v", c.p, got, c.want)
		}
	}
	if s[0] != 30*time.Millisecond {
		t.Error("percentile sorted the samples in place")
	}
	if (samples{}).percentile(50) != 0 {
		t.Error("a percentile of nothing is not 0")
	}
	var big samples
	for i := 1; i <= 10000; i++ {
		big = append(big, time.Duration(i))
	}
	if got := big.percentile(99.9); got != 9990 {
		t.Errorf("p99.9 of 1..10000 = %v, want 9990", got)
	}
}

// TestWriteStatsWindow: a write counts in a window when it overlaps it,
// so the one write a stall holds up is counted even though it started
// before the pass did.
func TestWriteStatsWindow(t *testing.T) {
	ms := time.Millisecond
	ws := []timedWrite{
		{0, 1 * ms},        // before
		{5 * ms, 300 * ms}, // starts before the window, stalled through it
		{305 * ms, 1 * ms}, // inside
		{400 * ms, 1 * ms}, // after
	}
	s := writeStats(ws, 10*ms, 350*ms)
	if s.n != 2 || s.max != 300*ms || s.p999 != 300*ms || s.p50 != ms {
		t.Fatalf("window stats %+v, want 2 writes, max and p99.9 300ms, p50 1ms", s)
	}
	if s := writeStats(ws, 500*ms, 600*ms); s.n != 0 || s.max != 0 {
		t.Fatalf("an empty window has stats %+v", s)
	}
}

// TestOverwriteLeavesAQuarter checks the arithmetic of the overwrite that
// makes compaction victims: 3/4 of the file once, in whole pieces, so a
// quarter of every segment stays live.
func TestOverwriteLeavesAQuarter(t *testing.T) {
	for _, size := range []int64{fullIso.compactFill, quickIso.compactFill} {
		args := overwriteArgs(size)
		var ioSize int64
		for _, a := range args {
			if v, ok := strings.CutPrefix(a, "--io_size="); ok {
				ioSize, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		if ioSize != size*3/4 {
			t.Errorf("size %d: io_size %d, want %d", size, ioSize, size*3/4)
		}
		if ioSize%overwriteChunk != 0 || size%(overwriteChunk+overwriteSkip) != 0 {
			t.Errorf("size %d: the overwrite does not cover the file in whole pieces", size)
		}
		// Segments hold 64 MiB of blocks; a victim must be under half live.
		if size < 2*64<<20 {
			t.Errorf("size %d: fewer than 2 segments to compact", size)
		}
	}
	if !slices.Contains(overwriteArgs(1<<30), "--rw=write:64k") || !slices.Contains(overwriteArgs(1<<30), "--bs=192k") {
		t.Errorf("overwrite args %v", overwriteArgs(1<<30))
	}
}

func TestFsyncRows(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.id()] {
			t.Fatalf("two rows have the id %s", r.id())
		}
		seen[r.id()] = true
	}
	one := row{rw: "randwrite", bs: "4k", engine: "psync", iodepth: 1, fsync: 1}
	four := one
	four.jobs = 4
	for _, r := range []row{one, four} {
		if !seen[r.id()] {
			t.Errorf("no row %s", r.id())
		}
	}
	if one.label() != "4k randwrite psync qd1 fsync=1" || four.label() != "4k randwrite psync qd1 fsync=1 4 jobs" {
		t.Errorf("labels %q, %q", one.label(), four.label())
	}
	// The first rows are the depth section's; they must not move.
	if depthRows[0].id() != "4k-randread-psync-qd1" || depthRows[1].id() != "4k-randread-libaio-qd16" {
		t.Errorf("depth rows are %s, %s", depthRows[0].id(), depthRows[1].id())
	}

	cfg := &config{size: 1 << 20, runtime: time.Second, ramp: time.Second}
	if !slices.Contains(jobArgs(cfg, one), "--fsync=1") {
		t.Errorf("fsync row args %v", jobArgs(cfg, one))
	}
	files := []string{"/a", "/b", "/c", "/d"}
	args := multiJobArgs(cfg, four, files)
	names, filenames := 0, 0
	for i, a := range args {
		if strings.HasPrefix(a, "--name=") {
			names++
			// Every --name is followed by its file: options after a
			// --name are that job's, before the first one global.
			if i+1 >= len(args) || args[i+1] != "--filename="+files[names-1] {
				t.Fatalf("job %d is not followed by its file: %v", names-1, args)
			}
		}
		if strings.HasPrefix(a, "--filename=") {
			filenames++
		}
	}
	if names != 4 || filenames != 4 || !slices.Contains(args, "--group_reporting") || !strings.HasPrefix(args[0], "--rw=") {
		t.Fatalf("multi-job args %v", args)
	}
}

func TestParseFlagsRows(t *testing.T) {
	cfg, err := parseFlags([]string{"-rows", "4k-randwrite-psync-qd1-fsync1-4jobs,4k-randread-psync-qd1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.rows) != 2 || cfg.rows[0].id() != "4k-randread-psync-qd1" {
		t.Errorf("rows %v, want two in table order", cfg.rows)
	}
	if cfg.out != "" {
		t.Errorf("some rows only write %q, want no report", cfg.out)
	}
	if _, err := parseFlags([]string{"-rows", "4k-nope"}); err == nil {
		t.Error("an unknown row was accepted")
	}
	cfg, err = parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.rows) != len(rows) || cfg.out == "" || !slices.Contains(cfg.sections, "isolation") {
		t.Errorf("a full run has %d rows, out %q, sections %v", len(cfg.rows), cfg.out, cfg.sections)
	}
	cfg, err = parseFlags([]string{"-sections", "isolation", "-quick"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.iso != quickIso || cfg.out != "" {
		t.Errorf("-quick isolation: %+v, out %q", cfg.iso, cfg.out)
	}
}

func TestAwaitCompactorGap(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	// Just mounted: the first pass is 30 s away.
	if w, err := awaitCompactorGap(ctx, now, now.Add(100*time.Millisecond), 10*time.Second); err != nil || w != 0 {
		t.Fatalf("right after the mount: waited %v, %v", w, err)
	}
	// A pass is due within the run: wait for it to go by.
	from := now.Add(-vafsCompactEvery + 300*time.Millisecond)
	start := time.Now()
	w, err := awaitCompactorGap(ctx, from, from.Add(50*time.Millisecond), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); w == 0 || took < 500*time.Millisecond || took > 5*time.Second {
		t.Fatalf("a pass due in 300ms: waited %v (took %v), want past the pass", w, time.Since(start))
	}
	if _, err := awaitCompactorGap(ctx, now, now, vafsCompactEvery); err == nil {
		t.Fatal("a run longer than the interval was given a gap")
	}
}

func TestDirectFileWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.raw")
	if err := makeSparse(path, 1<<20); err != nil {
		t.Fatal(err)
	}
	f, err := openDirect(path, 1)
	if errors.Is(err, syscall.EINVAL) {
		t.Skipf("skipping: the temp dir does not take O_DIRECT: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	for i := 0; i < 64; i++ {
		if _, err := f.write(); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Fsync(f.fd); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Size() != 1<<20 {
		t.Fatalf("the writes changed the size: %v %v", st.Size(), err)
	}
	var seen bool
	b, _ := os.ReadFile(path)
	for off := 0; off < len(b); off += 4096 {
		if b[off] != 0 || b[off+1] != 0 {
			seen = true
		}
	}
	if !seen {
		t.Fatal("no block was written")
	}
}

// TestBackgroundFioStops: a stream stopped with SIGTERM still reports;
// one that ended by itself before stop is an error.
func TestBackgroundFioStops(t *testing.T) {
	if _, err := exec.LookPath("fio"); err != nil {
		if os.Getenv("CI") != "" || os.Getenv("VAFS_BIN") != "" {
			t.Fatalf("needs fio (%v); a failure, not a skip, with CI or VAFS_BIN set", err)
		}
		t.Skipf("skipping: needs fio (%v); `just setup` installs it", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	var td teardown
	defer td.run()
	file := filepath.Join(dir, "b.raw")
	args := []string{"--name=s", "--rw=write", "--bs=64k", "--size=8M", "--rate=8m", "--time_based", "--runtime=60s", "--filename=" + file}
	bg, err := startFio(ctx, dir, "s", args, &td)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	out, err := bg.stop()
	if err != nil {
		t.Fatal(err)
	}
	if out.Jobs[0].Write.BWBytes == 0 {
		t.Fatal("the stopped stream reports no writes")
	}
	short := []string{"--name=s", "--rw=write", "--bs=64k", "--size=64k", "--filename=" + file}
	bg, err = startFio(ctx, dir, "short", short, &td)
	if err != nil {
		t.Fatal(err)
	}
	<-bg.done
	if _, err := bg.stop(); err == nil {
		t.Fatal("a stream that ended before stop was not an error")
	}
}

// TestRenderIsolation: whole results give every ratio and verdict; a
// section that failed part way still renders, with what it has.
func TestRenderIsolation(t *testing.T) {
	cfg := &config{iso: fullIso}
	ms := time.Millisecond
	var alone, beside samples
	for i := 1; i <= 30; i++ {
		alone = append(alone, time.Duration(i)*ms)
		beside = append(beside, time.Duration(3*i)*ms)
	}
	var base, pass []timedWrite
	for i := 0; i < 20000; i++ {
		at := time.Duration(i) * 500 * time.Microsecond
		base = append(base, timedWrite{at, 20 * time.Microsecond})
		pass = append(pass, timedWrite{at, 20 * time.Microsecond})
	}
	pass[8000].lat = time.Second // the stall, inside the pass
	full := &isoResult{
		neighbour: []*neighbourResult{{kind: "vafs", alone: alone, beside: beside, streamMiBs: 200}, {kind: "plain", alone: alone, beside: alone}},
		compact:   &compactResult{base: base, pass: pass, passFrom: 3 * time.Second, passTo: 5 * time.Second, moved: 16384, segs: 4, compactOut: "compacted 4 segments, moved 16384 blocks, freed 1 bytes", expectedBlocks: 16384},
		cold:      []*coldResult{{kind: "vafs", alone: 1000, four: 3000}, {kind: "plain", alone: 1000, four: 1500}},
	}
	out := renderIsolation(cfg, full)
	for _, want := range []string{"| vafs ", "3.00×", "plain (reference)", "p50 **not met**", "parallel cold reads ≥ 2×: **met**",
		"compaction stall p99.9 ≤ 2×: **met** (longest write during the pass: 1.00 s, 50000.00× the baseline's p99.9)", "on vafs ÷ on the plain file: p50 3.00×"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	partial := &isoResult{
		neighbour: []*neighbourResult{{kind: "vafs", alone: alone, err: errors.New("B: boom")}},
		cold:      []*coldResult{{kind: "vafs", err: errors.New("boom")}},
	}
	out = renderIsolation(cfg, partial)
	for _, want := range []string{"failed", "compaction stall p99.9 ≤ 2×: not measured", "parallel cold reads ≥ 2×: not measured"} {
		if !strings.Contains(out, want) {
			t.Errorf("partial report lacks %q:\n%s", want, out)
		}
	}
}

// TestColdReadsSameShare: the cold reads are counted, not timed, and both
// phases read the same share of each file: a phase that read more of a
// vafs file would find more of it in the host page cache.
func TestColdReadsSameShare(t *testing.T) {
	for _, iso := range []isoConfig{fullIso, quickIso} {
		cc := coldConfig(&config{iso: iso})
		n := coldIOs(iso)
		if n <= 0 || n*4096 > iso.coldSize {
			t.Fatalf("%d reads of 4 KiB in a file of %d bytes", n, iso.coldSize)
		}
		want := "--number_ios=" + strconv.FormatInt(n, 10)
		alone := coldArgs(cc, n)
		four := coldMultiArgs(cc, n, []string{"a", "b", "c", "d"})
		for name, args := range map[string][]string{"alone": alone, "four": four} {
			if slices.Contains(args, "--time_based") {
				t.Errorf("%s: time based: %q", name, args)
			}
			if !slices.Contains(args, want) {
				t.Errorf("%s: no %s: %q", name, want, args)
			}
			if !slices.Contains(args, "--size="+strconv.FormatInt(iso.coldSize, 10)) {
				t.Errorf("%s: not over the whole file: %q", name, args)
			}
			if slices.Contains(args, "--norandommap") {
				t.Errorf("%s: without fio's random map a block may be read twice: %q", name, args)
			}
		}
		jobs := 0
		for _, a := range four {
			if strings.HasPrefix(a, "--name=") {
				jobs++
			}
		}
		if jobs != coldFiles {
			t.Errorf("four: %d jobs, want %d: %q", jobs, coldFiles, four)
		}
	}
}
