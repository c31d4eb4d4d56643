// Command bench measures vafs against its yardsticks, in one run, and
// writes the report to docs/bench.md. The report has five sections; each
// can be run alone with -sections.
//
// fio: fio against four targets (columns), all on the same disk, under one
// work directory:
//
//	plain     a plain file on the host file system: the ceiling
//	qsd       a qcow2 image exported as a file by qemu-storage-daemon's FUSE export
//	loopback  a bare go-fuse loopback of a plain directory (`vafs debug loopback`):
//	          what FUSE and go-fuse cost before vafs does anything
//	vafs      a file in a vafs mount (`vafs mount --background --data D M`)
//
// Rows: 4k randread, 4k randwrite, 1M read, 1M write, each with psync at
// queue depth 1 and libaio at queue depth 16; the 1M writes again with an
// fdatasync every 64 MiB; 4k randwrite with an fsync after every write,
// alone and as 4 jobs on 4 files at once. Every target is prefilled with a
// sequential write first, so reads hit real data, not holes. -rows runs a
// subset of the rows.
//
// clone: how long a copy of a fully written 1 GiB and 10 GiB volume takes:
// `vafs clone`, `cp --reflink=auto` on the mount, `cp` of a plain file and
// `qemu-img create -b` of a qcow2 overlay (clone.go).
//
// depth: 4k random reads of vafs volumes with 0, 10, 100 and 1,000
// snapshots and of qcow2 backing chains of the same depths, every volume
// taken through the same writes, read cold in interleaved passes
// (depth.go).
//
// meta: metadata bytes per data byte after sequential and random writes
// (metasize.go).
//
// isolation: whether one file's I/O on a vafs mount waits for another's:
// a neighbour's fsync latency beside a streaming writer, a writer's tail
// latency during a compaction pass, cold reads of 4 files at once against
// one alone; each a ratio within one run (isolation.go).
//
// The loopback and vafs targets and the clone, depth and meta sections
// need root and /dev/fuse; qsd needs fuse3 (qemu-storage-daemon links
// libfuse3). The command always unmounts what it mounted and stops what it
// started, also on failure and on SIGINT/SIGTERM.
//
// It uses the standard library only, but for fs/control/wire (the clone
// section times a clone over the mount's control socket), so it runs with
// `go run` and no setup.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is what the flags decide.
type config struct {
	quick    bool
	sections []string
	targets  []string
	vafsBin  string
	workDir  string
	out      string
	keep     bool
	size     int64         // bytes per fio target file, and of the depth section's volumes
	runtime  time.Duration // measured part of each job
	ramp     time.Duration // warm-up before measuring
	started  time.Time

	cloneSizes  []int64       // clone: volume sizes
	runs        int           // clone: timed runs per operation, at most
	runBudget   time.Duration // clone: no new run of an operation once its runs took this long
	depths      []int         // depth: snapshot counts to measure at, ascending
	roundWrites int           // depth: random 4k writes before each snapshot
	metaSeq     int64         // meta: bytes written sequentially
	metaRand    int64         // meta: bytes written in random 4k writes
	rows        []row         // fio: the rows to run, in table order
	iso         isoConfig     // isolation: sizes and durations
}

var (
	allTargets  = []string{"plain", "qsd", "loopback", "vafs"}
	allSections = []string{"fio", "clone", "depth", "meta", "isolation"}
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err = run(ctx, cfg)
	interrupted := ctx.Err() != nil // before stop, which cancels ctx too
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		if interrupted {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

func parseFlags(args []string) (*config, error) {
	fset := flag.NewFlagSet("bench", flag.ContinueOnError)
	cfg := &config{started: time.Now()}
	var targets, sections, cloneSizes, depths, rowIDs string
	fset.BoolVar(&cfg.quick, "quick", false, "smoke run: 3 s jobs on 256 MiB files, clones of 64 and 640 MiB, depths 0,10,100, "+
		"512/128 MiB for meta; writes no report unless -out is given")
	fset.StringVar(&sections, "sections", strings.Join(allSections, ","), "comma-separated subset of "+strings.Join(allSections, ",")+
		"; a subset writes no report unless -out is given")
	fset.StringVar(&targets, "targets", strings.Join(allTargets, ","), "fio section: comma-separated subset of "+strings.Join(allTargets, ","))
	fset.StringVar(&rowIDs, "rows", "", "fio section: comma-separated subset of the rows, by id ("+strings.Join(rowIDList(), ",")+
		"); a subset writes no report unless -out is given")
	fset.StringVar(&cloneSizes, "clone-sizes", "", "clone section: comma-separated volume sizes (default 1G,10G; 64M,640M with -quick)")
	fset.StringVar(&depths, "depths", "", "depth section: comma-separated snapshot counts (default 0,10,100,1000; 0,10,100 with -quick)")
	fset.StringVar(&cfg.vafsBin, "vafs", "bin/vafs", "vafs binary (used for the loopback and vafs targets)")
	fset.StringVar(&cfg.workDir, "work", "/var/tmp/vafs-bench", "work directory; every target lives under it, on the same disk")
	fset.StringVar(&cfg.out, "out", "docs/bench.md", "Markdown report to write (\"\" for none)")
	fset.BoolVar(&cfg.keep, "keep", false, "keep the work directory (images, fio JSON, daemon logs) afterwards")
	if err := fset.Parse(args); err != nil {
		return nil, err
	}
	if fset.NArg() != 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fset.Args())
	}
	outSet := false
	fset.Visit(func(f *flag.Flag) {
		if f.Name == "out" {
			outSet = true
		}
	})

	cfg.size, cfg.runtime, cfg.ramp = 1<<30, 12*time.Second, 2*time.Second
	cfg.cloneSizes, cfg.runs, cfg.runBudget = []int64{1 << 30, 10 << 30}, 9, 30*time.Second
	cfg.depths, cfg.roundWrites = []int{0, 10, 100, 1000}, 64
	cfg.metaSeq, cfg.metaRand = 4<<30, 1<<30
	cfg.iso = fullIso
	if cfg.quick {
		cfg.iso = quickIso
		cfg.size, cfg.runtime, cfg.ramp = 256<<20, 3*time.Second, 1*time.Second
		cfg.cloneSizes, cfg.runs, cfg.runBudget = []int64{64 << 20, 640 << 20}, 5, 10*time.Second
		cfg.depths = []int{0, 10, 100}
		cfg.metaSeq, cfg.metaRand = 512<<20, 128<<20
		// A smoke run must not overwrite the published figures by accident.
		if !outSet {
			cfg.out = ""
		}
	}
	if cloneSizes != "" {
		cfg.cloneSizes = nil
		for _, f := range strings.Split(cloneSizes, ",") {
			n, err := parseSize(strings.TrimSpace(f))
			if err != nil {
				return nil, fmt.Errorf("-clone-sizes: %w", err)
			}
			cfg.cloneSizes = append(cfg.cloneSizes, n)
		}
	}
	if depths != "" {
		cfg.depths = nil
		for _, f := range strings.Split(depths, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 0 {
				return nil, fmt.Errorf("-depths: %q is not a snapshot count", f)
			}
			cfg.depths = append(cfg.depths, n)
		}
		sort.Ints(cfg.depths)
		if cfg.depths[0] != 0 {
			// Ratios are against depth 0.
			cfg.depths = append([]int{0}, cfg.depths...)
		}
	}

	var err error
	if cfg.sections, err = subset("section", sections, allSections); err != nil {
		return nil, err
	}
	cfg.rows = rows
	if rowIDs != "" {
		ids, err := subset("row", rowIDs, rowIDList())
		if err != nil {
			return nil, err
		}
		cfg.rows = nil
		for _, r := range rows {
			if contains(ids, r.id()) {
				cfg.rows = append(cfg.rows, r)
			}
		}
		// Part of the table must not overwrite the published one by accident.
		if len(cfg.rows) != len(rows) && !outSet {
			cfg.out = ""
		}
	}
	// A partial report must not overwrite the published one by accident.
	if len(cfg.sections) != len(allSections) && !outSet {
		cfg.out = ""
	}

	if cfg.targets, err = subset("target", targets, allTargets); err != nil {
		return nil, err
	}

	if cfg.vafsBin, err = filepath.Abs(cfg.vafsBin); err != nil {
		return nil, err
	}
	if cfg.workDir, err = filepath.Abs(cfg.workDir); err != nil {
		return nil, err
	}
	if cfg.out != "" {
		if cfg.out, err = filepath.Abs(cfg.out); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// subset parses a comma-separated list of names from all, and returns
// them in the order of all (the canonical column or section order).
func subset(what, list string, all []string) ([]string, error) {
	seen := map[string]bool{}
	for _, x := range strings.Split(list, ",") {
		x = strings.TrimSpace(x)
		if x == "" {
			continue
		}
		if !contains(all, x) {
			return nil, fmt.Errorf("unknown %s %q (want some of %s)", what, x, strings.Join(all, ","))
		}
		seen[x] = true
	}
	var out []string
	for _, x := range all {
		if seen[x] {
			out = append(out, x)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no %ss selected", what)
	}
	return out, nil
}

// rowIDList is the id of every fio row, in table order.
func rowIDList() []string {
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.id()
	}
	return ids
}

// parseSize reads 512M, 10G, 4096 (bytes).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size (like 512M or 10G)", s)
	}
	return n * mult, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// run sets every target up, measures, reports, and tears everything down.
// Every mount and daemon registers its teardown before anything else can
// fail, and the teardowns run on every return path.
func run(ctx context.Context, cfg *config) (err error) {
	if err := preflight(cfg); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.workDir, 0o755); err != nil {
		return err
	}
	// Resolve symlinks so the mount points we look for in /proc match.
	if cfg.workDir, err = filepath.EvalSymlinks(cfg.workDir); err != nil {
		return err
	}
	if entries, _ := os.ReadDir(cfg.workDir); len(entries) != 0 {
		return fmt.Errorf("work directory %s is not empty: another bench is running, or a previous run used -keep; "+
			"wait, remove it, or pass another -work", cfg.workDir)
	}

	var td teardown
	defer func() {
		if terr := td.run(); terr != nil && err == nil {
			err = terr
		}
		if !cfg.keep {
			if rerr := os.RemoveAll(cfg.workDir); rerr != nil && err == nil {
				err = rerr
			}
		} else {
			logf("kept %s", cfg.workDir)
		}
	}()

	env := collectEnv(ctx, cfg)
	var outs []*sectionOut
	var failed []string
	for _, name := range cfg.sections {
		logf("section %s", name)
		out, err := sections[name](ctx, cfg, &td)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if out == nil {
			out = &sectionOut{name: name, title: name}
		}
		out.name = name
		if err != nil {
			logf("section %s: %v", name, err)
			out.err = err
			failed = append(failed, name)
		}
		outs = append(outs, out)
	}

	rep := renderReport(cfg, env, outs)
	fmt.Println()
	fmt.Print(rep.terminal)
	if cfg.out != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(cfg.out, []byte(rep.markdown), 0o644); err != nil {
			return err
		}
		logf("wrote %s", cfg.out)
	} else {
		logf("no report written (-quick or a subset of -sections; pass -out to write one)")
	}
	if len(failed) != 0 {
		return fmt.Errorf("sections %s failed or measured only in part; see above", strings.Join(failed, ", "))
	}
	return nil
}

// preflight fails early, with the reason, instead of halfway through a run.
func preflight(cfg *config) error {
	var missing []string
	need := []string{"fio"}
	if contains(cfg.sections, "fio") && contains(cfg.targets, "qsd") {
		need = append(need, "qemu-img", "qemu-storage-daemon")
	}
	if contains(cfg.sections, "clone") {
		need = append(need, "qemu-img", "cp", "du")
	}
	if contains(cfg.sections, "depth") {
		need = append(need, "qemu-img", "qemu-io", "qemu-storage-daemon")
	}
	if contains(cfg.sections, "meta") {
		need = append(need, "du")
	}
	for _, bin := range need {
		if _, err := lookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) != 0 {
		return fmt.Errorf("missing %s (run `npx -y rust-just setup`)", strings.Join(missing, ", "))
	}
	// What needs a FUSE mount: fio targets, and sections that mount vafs.
	type user struct{ what, name, drop string }
	var users []user
	if contains(cfg.sections, "fio") {
		for _, t := range cfg.targets {
			users = append(users, user{"target", t, "-targets"})
		}
	}
	for _, s := range cfg.sections {
		if s != "fio" {
			users = append(users, user{"section", s, "-sections"})
		}
	}
	for _, u := range users {
		if u.name == "plain" {
			continue
		}
		if u.name != "qsd" {
			if os.Geteuid() != 0 {
				return fmt.Errorf("%s %s needs root (it mounts with mount(2)); run as root or drop it with %s", u.what, u.name, u.drop)
			}
			if _, err := os.Stat(cfg.vafsBin); err != nil {
				return fmt.Errorf("%s %s needs the vafs binary: %v (run `npx -y rust-just build` or pass -vafs)", u.what, u.name, err)
			}
			if _, err := os.Stat(engineBin(cfg)); err != nil && os.Getenv("VAFS_ENGINE") == "" {
				return fmt.Errorf("%s %s needs the engine vafs runs for mount and debug, next to it: %v (run `npx -y rust-just build`, which builds both)", u.what, u.name, err)
			}
		}
		if _, err := os.Stat("/dev/fuse"); err != nil {
			return fmt.Errorf("%s %s needs /dev/fuse: %v", u.what, u.name, err)
		}
	}
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func sizeString(b int64) string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", b>>30)
	default:
		return fmt.Sprintf("%d MiB", b>>20)
	}
}

// engineBin is vafsd, the engine that cfg.vafsBin runs for mount and
// debug (cmd/vafs looks for it in the same directory first): it holds
// go-fuse, and it is what the mount processes execute.
func engineBin(cfg *config) string {
	if e := os.Getenv("VAFS_ENGINE"); e != "" {
		return e
	}
	return filepath.Join(filepath.Dir(cfg.vafsBin), "vafsd")
}
