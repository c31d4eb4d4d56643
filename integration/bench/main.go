// Command bench measures vafs against its yardsticks with fio, in one run,
// and writes the side-by-side table to docs/bench.md.
//
// Targets (columns), all on the same disk, under one work directory:
//
//	plain     a plain file on the host file system: the ceiling
//	qsd       a qcow2 image exported as a file by qemu-storage-daemon's FUSE export
//	loopback  a bare go-fuse loopback of a plain directory (`vafs debug loopback`):
//	          what FUSE and go-fuse cost before vafs does anything
//	vafs      a file in a vafs mount (`vafs mount --background --data D M`)
//
// Rows: 4k randread, 4k randwrite, 1M read, 1M write, each with psync at
// queue depth 1 and libaio at queue depth 16. Every target is prefilled
// with a sequential write first, so reads hit real data, not holes.
//
// The loopback and vafs targets need root and /dev/fuse; qsd needs fuse3
// (qemu-storage-daemon links libfuse3). The command always unmounts what it
// mounted and stops what it started, also on failure and on SIGINT/SIGTERM.
//
// It uses the standard library only, so it runs with `go run` and no setup.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// config is what the flags decide.
type config struct {
	quick   bool
	targets []string
	vafsBin string
	workDir string
	out     string
	keep    bool
	size    int64         // bytes per target file
	runtime time.Duration // measured part of each job
	ramp    time.Duration // warm-up before measuring
	started time.Time
}

var allTargets = []string{"plain", "qsd", "loopback", "vafs"}

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
	var targets string
	fset.BoolVar(&cfg.quick, "quick", false, "smoke run: 3 s jobs on 256 MiB files; writes no report unless -out is given")
	fset.StringVar(&targets, "targets", strings.Join(allTargets, ","), "comma-separated subset of "+strings.Join(allTargets, ","))
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
	if cfg.quick {
		cfg.size, cfg.runtime, cfg.ramp = 256<<20, 3*time.Second, 1*time.Second
		// A smoke run must not overwrite the published figures by accident.
		if !outSet {
			cfg.out = ""
		}
	}

	seen := map[string]bool{}
	for _, t := range strings.Split(targets, ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if !contains(allTargets, t) {
			return nil, fmt.Errorf("unknown target %q (want some of %s)", t, strings.Join(allTargets, ","))
		}
		seen[t] = true
	}
	for _, t := range allTargets { // keep the canonical column order
		if seen[t] {
			cfg.targets = append(cfg.targets, t)
		}
	}
	if len(cfg.targets) == 0 {
		return nil, errors.New("no targets selected")
	}

	var err error
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
	var ready []*target
	failed := map[string]string{}
	for _, name := range cfg.targets {
		t := newTarget(name, cfg)
		logf("setting up %s", name)
		if err := t.setup(ctx, &td); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			logf("%s: not measured: %v", name, err)
			failed[name] = err.Error()
			continue
		}
		ready = append(ready, t)
	}
	if len(ready) == 0 {
		return errors.New("no target could be set up")
	}

	for _, t := range ready {
		logf("prefilling %s (%s sequential write)", t.name, sizeString(cfg.size))
		if err := prefill(ctx, cfg, t); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			logf("%s: not measured: prefill: %v", t.name, err)
			failed[t.name] = "prefill: " + err.Error()
			t.broken = true
		}
	}

	res := results{}
	for _, r := range rows {
		for _, t := range ready {
			if t.broken {
				continue
			}
			logf("%-22s %s", r.label(), t.name)
			m, err := runJob(ctx, cfg, t, r)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				logf("%s: %s failed: %v", t.name, r.label(), err)
				res.set(r, t.name, measurement{err: err})
				continue
			}
			res.set(r, t.name, m)
		}
	}

	report := renderReport(cfg, env, res, failed)
	fmt.Println()
	fmt.Print(report.table)
	for name, why := range failed {
		fmt.Printf("\n%s: not measured: %s\n", name, why)
	}
	if cfg.out != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(cfg.out, []byte(report.markdown), 0o644); err != nil {
			return err
		}
		logf("wrote %s", cfg.out)
	}
	if len(failed) != 0 || res.anyError() {
		return errors.New("some targets or jobs failed; see above")
	}
	return nil
}

// preflight fails early, with the reason, instead of halfway through a run.
func preflight(cfg *config) error {
	var missing []string
	need := []string{"fio"}
	for _, t := range cfg.targets {
		switch t {
		case "qsd":
			need = append(need, "qemu-img", "qemu-storage-daemon")
		}
	}
	for _, bin := range need {
		if _, err := lookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) != 0 {
		return fmt.Errorf("missing %s (run `npx -y rust-just setup`)", strings.Join(missing, ", "))
	}
	for _, t := range cfg.targets {
		switch t {
		case "loopback", "vafs":
			if os.Geteuid() != 0 {
				return fmt.Errorf("target %s needs root (it mounts with mount(2)); run as root or drop it with -targets", t)
			}
			if _, err := os.Stat(cfg.vafsBin); err != nil {
				return fmt.Errorf("target %s needs the vafs binary: %v (run `npx -y rust-just build` or pass -vafs)", t, err)
			}
			fallthrough
		case "qsd":
			if _, err := os.Stat("/dev/fuse"); err != nil {
				return fmt.Errorf("target %s needs /dev/fuse: %v", t, err)
			}
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
