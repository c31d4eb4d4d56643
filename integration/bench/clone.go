package main

// The clone section: how long a copy of a fully written volume takes, at
// two sizes, by every means a user has. vafs clones share the mapping tree,
// so `vafs clone` should cost the same at 1 GiB and 10 GiB; a plain cp
// copies every byte; a qcow2 overlay is O(1) too but starts a backing chain.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cloneGoal: `vafs clone` is O(1), i.e. under 10 ms at every size, and the
// largest size costs at most 1.5 times the smallest.
const (
	// A clone takes milliseconds where a copy takes seconds: run it more
	// often, for a median that the machine's load moves less.
	cheapRuns = 3

	cloneGoal      = 10 * time.Millisecond
	cloneGoalRatio = 1.5
)

type cloneOp struct {
	key, label string
}

var cloneOps = []cloneOp{
	{"version", "`vafs version` (CLI start-up, for scale)"},
	{"clone", "`vafs clone SRC DST`"},
	{"clonediff", "`vafs clone` − `vafs version` (paired runs)"},
	{"socket", "clone request over the control socket (no CLI)"},
	{"reflink", "`cp --reflink=auto SRC DST` on the vafs mount"},
	{"cp", "`cp SRC DST`, plain file on the host file system"},
	{"cpsync", "`cp SRC DST; sync`, plain file"},
	{"qcow2", "`qemu-img create -f qcow2 -b SRC -F raw DST`"},
}

type cloneResult struct {
	size      int64
	times     map[string]samples
	cpu       map[string]samples // CPU time (user + sys) of the CLI process, for version and clone
	errs      map[string]error
	allocated int64  // st_blocks × 512 of the vafs source
	cpTrace   string // what cp --reflink=auto did on the mount, from strace
}

func runCloneSection(ctx context.Context, cfg *config, td *teardown) (*sectionOut, error) {
	out := &sectionOut{title: "Clone: copying a fully written volume", method: cloneMethod(cfg)}
	if err := checkCLI(ctx, cfg, "clone"); err != nil {
		return out, err
	}
	var res []*cloneResult
	var errs []error
	for _, size := range cfg.cloneSizes {
		r, err := cloneAt(ctx, cfg, size, td)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		res = append(res, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sizeString(size), err))
		}
	}
	out.results = renderClone(cfg, res)
	return out, errors.Join(errs...)
}

// cloneAt measures every operation on a fresh vafs mount and a plain file
// of one size, then removes both, so the sizes do not add up on disk.
func cloneAt(ctx context.Context, cfg *config, size int64, td *teardown) (r *cloneResult, err error) {
	r = &cloneResult{size: size, times: map[string]samples{}, cpu: map[string]samples{}, errs: map[string]error{}}
	label := strings.ReplaceAll(sizeString(size), " ", "")
	dir := filepath.Join(cfg.workDir, "clone", label)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	sub := &teardown{}
	td.add("clone "+label, sub.run)
	defer func() {
		if terr := sub.run(); terr != nil && err == nil {
			err = terr
		}
		if !cfg.keep {
			if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
				err = rerr
			}
		}
	}()

	m, err := mountVafs(ctx, cfg, filepath.Join(dir, "vafs"), "vafs (clone "+label+")", sub)
	if err != nil {
		return r, err
	}
	src := filepath.Join(m.mnt, "src.raw")
	plain := filepath.Join(dir, "plain.raw")
	logf("clone %s: filling a vafs volume and a plain file", label)
	if err := fill(ctx, dir, "fill-vafs", src, size); err != nil {
		return r, err
	}
	if err := fill(ctx, dir, "fill-plain", plain, size); err != nil {
		return r, err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(src, &st); err != nil {
		return r, err
	}
	r.allocated = st.Blocks * 512

	// Each run makes a new copy, checks it, and removes it (untimed).
	copyOp := func(key string, dstDir, ext string, dropFirst bool, cmd func(dst string) []string, check func(dst string) error) {
		if ctx.Err() != nil {
			return
		}
		logf("clone %s: %s", label, key)
		runs := cfg.runs
		r.times[key], r.errs[key] = repeat(ctx, runs, cfg.runBudget, func(i int) (time.Duration, error) {
			dst := filepath.Join(dstDir, fmt.Sprintf("%s-%d%s", key, i, ext))
			if dropFirst {
				dropCaches()
			}
			argv := cmd(dst)
			d, err := timeRun(ctx, 30*time.Minute, argv[0], argv[1:]...)
			if err != nil {
				return 0, err
			}
			if check != nil {
				if err := check(dst); err != nil {
					return 0, err
				}
			}
			if err := os.Remove(dst); err != nil {
				return 0, err
			}
			return d, nil
		})
	}

	// `vafs version` right before each `vafs clone`: on a loaded machine
	// process start-up alone can take longer than the goal, and the
	// difference of a pair says what the clone itself cost.
	logf("clone %s: vafs version and vafs clone", label)
	var versions, diffs samples
	r.times["clone"], r.errs["clone"] = repeat(ctx, cheapRuns*cfg.runs, cfg.runBudget, func(i int) (time.Duration, error) {
		dv, cv, err := timeRunCPU(ctx, time.Minute, cfg.vafsBin, "version")
		if err != nil {
			return 0, err
		}
		dst := filepath.Join(m.mnt, fmt.Sprintf("clone-%d.raw", i))
		dc, cc, err := timeRunCPU(ctx, time.Minute, cfg.vafsBin, "clone", src, dst)
		if err != nil {
			return 0, err
		}
		versions, diffs = append(versions, dv), append(diffs, dc-dv)
		r.cpu["version"], r.cpu["clone"] = append(r.cpu["version"], cv), append(r.cpu["clone"], cc)
		if err := sameSample(src, dst, size); err != nil {
			return 0, err
		}
		return dc, os.Remove(dst)
	})
	r.times["version"], r.times["clonediff"] = versions, diffs

	// The same request as the CLI's, on one connection: no start-up.
	if ctx.Err() == nil {
		logf("clone %s: clone over the control socket", label)
		if sc, err := dialMount(m); err != nil {
			r.errs["socket"] = err
		} else {
			r.times["socket"], r.errs["socket"] = repeat(ctx, cheapRuns*cfg.runs, cfg.runBudget, func(i int) (time.Duration, error) {
				dst := filepath.Join(m.mnt, fmt.Sprintf("socket-%d.raw", i))
				d, err := sc.clone(src, dst)
				if err != nil {
					return 0, err
				}
				if err := sameSample(src, dst, size); err != nil {
					return 0, err
				}
				return d, os.Remove(dst)
			})
			sc.close()
		}
	}

	r.cpTrace = traceCp(ctx, src, filepath.Join(m.mnt, "strace.raw"), filepath.Join(dir, "cp.strace"))
	copyOp("reflink", m.mnt, ".raw", true,
		func(dst string) []string { return []string{"cp", "--reflink=auto", src, dst} },
		func(dst string) error { return sameSample(src, dst, size) })

	// cp and cp + sync are the same runs: the sync is timed separately.
	if ctx.Err() == nil {
		logf("clone %s: cp of the plain file", label)
		var withSync samples
		r.times["cp"], r.errs["cp"] = repeat(ctx, cfg.runs, cfg.runBudget, func(i int) (time.Duration, error) {
			dst := filepath.Join(dir, fmt.Sprintf("cp-%d.raw", i))
			dropCaches()
			d, err := timeRun(ctx, 30*time.Minute, "cp", plain, dst)
			if err != nil {
				return 0, err
			}
			ds, err := timeRun(ctx, 30*time.Minute, "sync")
			if err != nil {
				return 0, err
			}
			withSync = append(withSync, d+ds)
			if err := sameSample(plain, dst, size); err != nil {
				return 0, err
			}
			return d, os.Remove(dst)
		})
		r.times["cpsync"], r.errs["cpsync"] = withSync, r.errs["cp"]
	}

	copyOp("qcow2", dir, ".qcow2", false,
		func(dst string) []string {
			return []string{"qemu-img", "create", "-q", "-f", "qcow2", "-b", plain, "-F", "raw", dst}
		},
		func(dst string) error {
			_, err := os.Stat(dst)
			return err
		})

	var errs []error
	for _, op := range cloneOps {
		if e := r.errs[op.key]; e != nil {
			errs = append(errs, fmt.Errorf("%s: %w", op.key, e))
		}
	}
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	return r, errors.Join(errs...)
}

// sameSample checks that dst is as large as src and holds the same bytes
// at a few places: a copy that took 1 ms must be a real copy.
func sameSample(src, dst string, size int64) error {
	fi, err := os.Stat(dst)
	if err != nil {
		return err
	}
	if fi.Size() != size {
		return fmt.Errorf("%s has %d bytes, want %d", dst, fi.Size(), size)
	}
	a, err := os.Open(src)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := os.Open(dst)
	if err != nil {
		return err
	}
	defer b.Close()
	rng := rand.New(rand.NewPCG(uint64(size), 1))
	bufA, bufB := make([]byte, 4096), make([]byte, 4096)
	for i := 0; i < 16; i++ {
		off := rng.Int64N(size/4096) * 4096
		if i == 0 {
			off = size - 4096 // the last block too
		}
		if _, err := a.ReadAt(bufA, off); err != nil && err != io.EOF {
			return err
		}
		if _, err := b.ReadAt(bufB, off); err != nil && err != io.EOF {
			return err
		}
		if !bytes.Equal(bufA, bufB) {
			return fmt.Errorf("%s differs from %s at offset %d", dst, src, off)
		}
		if bytes.Equal(bufA, make([]byte, 4096)) {
			return fmt.Errorf("%s reads zeros at offset %d: the fill did not write it", src, off)
		}
	}
	return nil
}

var (
	cfrRE     = regexp.MustCompile(`copy_file_range\(.*\)\s*=\s*(-?\d+)`)
	ficloneRE = regexp.MustCompile(`ioctl\(\d+, (?:BTRFS_IOC_CLONE|FICLONE)[^)]*\)\s*=\s*(.*)`)
)

// traceCp runs cp --reflink=auto once under strace (untimed) and says which
// copy path it took: FICLONE, copy_file_range, or read/write.
func traceCp(ctx context.Context, src, dst, tracePath string) string {
	if _, err := exec.LookPath("strace"); err != nil {
		return "not traced (no strace)"
	}
	defer os.Remove(dst)
	if _, err := runCmd(ctx, 30*time.Minute, "strace", "-f", "-qq", "-e", "trace=ioctl,copy_file_range",
		"-o", tracePath, "cp", "--reflink=auto", src, dst); err != nil {
		return "strace failed: " + err.Error()
	}
	raw, err := os.ReadFile(tracePath)
	if err != nil {
		return err.Error()
	}
	var calls int
	var copied int64
	var parts []string
	for _, line := range strings.Split(string(raw), "\n") {
		if m := ficloneRE.FindStringSubmatch(line); m != nil {
			parts = append(parts, "FICLONE = "+strings.TrimSpace(m[1]))
		}
		if m := cfrRE.FindStringSubmatch(line); m != nil {
			calls++
			if n, err := strconv.ParseInt(m[1], 10, 64); err == nil && n > 0 {
				copied += n
			}
		}
	}
	if calls == 0 {
		parts = append(parts, "no copy_file_range (cp read and wrote the data)")
	} else {
		parts = append(parts, fmt.Sprintf("%d copy_file_range calls moved %s", calls, bytesString(copied)))
	}
	return strings.Join(parts, "; ")
}

func bytesString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

func cloneMethod(cfg *config) string {
	var b strings.Builder
	sizes := make([]string, len(cfg.cloneSizes))
	for i, s := range cfg.cloneSizes {
		sizes[i] = sizeString(s)
	}
	fmt.Fprintf(&b, "For each size (%s), one after the other: a fresh vafs mount, a volume SRC in it written in full with\n\n", strings.Join(sizes, ", "))
	fmt.Fprintf(&b, "    fio %s --filename=SRC\n\n", strings.Join(fillArgs(cfg.cloneSizes[0]), " "))
	fmt.Fprintf(&b, "(the size varies), and a plain file of the same size written the same way on the host file system "+
		"of the work directory. Then each operation runs up to %d times (`vafs clone`: %d times; no new run once its runs took %s), "+
		"each run making a new DST that is checked (size, and 16 sampled blocks equal to SRC's and not zero) and removed "+
		"untimed. The figure is the median wall-clock time of the command, from fork to exit, "+
		"with the number of runs in parentheses. `vafs version` runs right before each `vafs clone`, and the "+
		"`vafs clone` − `vafs version` row is the median of the per-pair differences: roughly what the clone costs "+
		"beyond starting a process, which on a loaded machine can alone exceed the goal. "+
		"The control-socket row sends the CLI's request (fs/control/wire `Client.Clone`, docs/control-socket.md) on one "+
		"connection opened beforehand, from the bench process: the clone's cost in the mount plus one round trip. "+
		"Before each `cp`, `sync; echo 3 > /proc/sys/vm/drop_caches`, so cp reads SRC from the disk (vafs: from its segment files). "+
		"`vafs clone` is durable on return (docs/cli-snapshots.md); a `cp` is not until the `sync` after it, "+
		"hence the `cp; sync` row, which times the same runs.\n\n", cfg.runs, cheapRuns*cfg.runs, cfg.runBudget)
	fmt.Fprintf(&b, "`cp --reflink=auto` first tries the FICLONE ioctl, which FUSE does not forward, then copy_file_range, "+
		"which vafs serves as a clone; but Debian 12's cp (coreutils 9.1) uses copy_file_range only for a source that does not "+
		"look sparse (st_blocks × 512 ≥ st_size), and otherwise reads and writes. Below the table: what vafs reports "+
		"as SRC's st_blocks, and what cp did, from one extra untimed run under `strace -e trace=ioctl,copy_file_range`.\n")
	return b.String()
}

func renderClone(cfg *config, res []*cloneResult) string {
	if len(res) == 0 {
		return ""
	}
	header := []string{"operation"}
	for _, r := range res {
		header = append(header, sizeString(r.size))
	}
	first, last := res[0], res[len(res)-1]
	ratioName := ""
	if len(res) > 1 {
		ratioName = shortSize(last.size) + " / " + shortSize(first.size)
		header = append(header, ratioName)
	}
	// The goals, for vafs clone: every size under cloneGoal, and the
	// largest at most cloneGoalRatio times the smallest.
	var figs []string
	met, measured := true, true
	for _, r := range res {
		s := r.times["clone"]
		if len(s) == 0 || r.errs["clone"] != nil {
			measured = false
			figs = append(figs, sizeString(r.size)+": not measured")
			continue
		}
		figs = append(figs, fmt.Sprintf("%s: %s", sizeString(r.size), fmtDur(s.median())))
		if s.median() >= cloneGoal {
			met = false
		}
	}
	ratioMeasured, ratioMet, ratio := false, false, 0.0
	if a, c := last.times["clone"], first.times["clone"]; len(res) > 1 && len(a) != 0 && len(c) != 0 &&
		last.errs["clone"] == nil && first.errs["clone"] == nil {
		ratio = float64(a.median()) / float64(c.median())
		ratioMeasured, ratioMet = true, ratio <= cloneGoalRatio
	}
	header = append(header, "goal")

	var body [][]string
	for _, op := range cloneOps {
		line := []string{op.label}
		for _, r := range res {
			line = append(line, sampleCell(r, op.key))
		}
		if len(res) > 1 {
			a, b := last.times[op.key], first.times[op.key]
			if len(a) != 0 && len(b) != 0 && last.errs[op.key] == nil && first.errs[op.key] == nil && a.median() > 0 && b.median() > 0 {
				line = append(line, fmt.Sprintf("%.2f×", float64(a.median())/float64(b.median())))
			} else {
				line = append(line, "–")
			}
		}
		goal := ""
		if op.key == "socket" {
			sm, smeasured := true, true
			for _, r := range res {
				x := r.times["socket"]
				if len(x) == 0 || r.errs["socket"] != nil {
					smeasured = false
				} else if x.median() >= cloneGoal {
					sm = false
				}
			}
			goal = fmt.Sprintf("< %s: %s", fmtDur(cloneGoal), verdict(smeasured, sm))
		}
		if op.key == "clone" {
			goal = fmt.Sprintf("< %s: %s", fmtDur(cloneGoal), verdict(measured, met))
			if len(res) > 1 {
				goal += fmt.Sprintf("; ≤ %.1f×: %s", cloneGoalRatio, verdict(ratioMeasured, ratioMet))
			}
		}
		line = append(line, goal)
		body = append(body, line)
	}
	var b strings.Builder
	b.WriteString(mdTable(header, body))

	fmt.Fprintf(&b, "\nGoal: `vafs clone` under %s at every size: %s (%s).\n", fmtDur(cloneGoal), verdict(measured, met), strings.Join(figs, ", "))
	if len(res) > 1 {
		if ratioMeasured {
			fmt.Fprintf(&b, "Goal: `vafs clone` %s ≤ %.1f: %s (%.2f).\n", ratioName, cloneGoalRatio, verdict(true, ratioMet), ratio)
		} else {
			fmt.Fprintf(&b, "Goal: `vafs clone` %s ≤ %.1f: not measured.\n", ratioName, cloneGoalRatio)
		}
	}
	var diffs []string
	for _, r := range res {
		if d := r.times["clonediff"]; len(d) != 0 {
			diffs = append(diffs, fmt.Sprintf("%s: %s", sizeString(r.size), sampleCell(r, "clonediff")))
		}
	}
	if len(diffs) != 0 {
		fmt.Fprintf(&b, "Beyond process start-up (`vafs clone` − `vafs version`, paired): %s.\n", strings.Join(diffs, ", "))
	}

	var cpus []string
	for _, r := range res {
		if v, c := r.cpu["version"], r.cpu["clone"]; len(v) != 0 && len(c) != 0 {
			cpus = append(cpus, fmt.Sprintf("%s: `vafs version` %s, `vafs clone` %s", sizeString(r.size), fmtDur(v.median()), fmtDur(c.median())))
		}
	}
	if len(cpus) != 0 {
		fmt.Fprintf(&b, "CPU time of the CLI process (user + sys, median; it does not grow with the machine's load as wall-clock time does): %s.\n",
			strings.Join(cpus, "; "))
	}

	fmt.Fprintf(&b, "\nSpread (min–max) of `vafs clone`: ")
	for i, r := range res {
		if i > 0 {
			b.WriteString(", ")
		}
		s := r.times["clone"]
		if len(s) == 0 {
			fmt.Fprintf(&b, "%s: –", sizeString(r.size))
			continue
		}
		fmt.Fprintf(&b, "%s: %s–%s", sizeString(r.size), fmtDur(s.min()), fmtDur(s.max()))
	}
	b.WriteString(".\n\n`cp --reflink=auto` on the mount:\n\n")
	for _, r := range res {
		sparse := "not sparse, so cp may use copy_file_range"
		if r.allocated < r.size {
			sparse = "looks sparse to cp, which then does not use copy_file_range"
		}
		fmt.Fprintf(&b, "- %s: SRC st_blocks × 512 = %d of %d bytes (%s); under strace: %s.\n",
			sizeString(r.size), r.allocated, r.size, sparse, r.cpTrace)
	}
	var notes []string
	for _, r := range res {
		for _, op := range cloneOps {
			if e := r.errs[op.key]; e != nil {
				notes = append(notes, fmt.Sprintf("- %s, %s: %s", sizeString(r.size), op.key, strings.ReplaceAll(e.Error(), "\n", " ")))
			}
		}
	}
	if len(notes) != 0 {
		fmt.Fprintf(&b, "\nFailed:\n\n%s\n", strings.Join(notes, "\n"))
	}
	return b.String()
}

func sampleCell(r *cloneResult, key string) string {
	s := r.times[key]
	if key == "clonediff" && len(s) != 0 {
		// A difference can be negative; say so rather than print nonsense.
		if med := s.median(); med < 0 {
			return fmt.Sprintf("−%s (%d)", fmtDur(-med), len(s))
		}
	}
	switch {
	case r.errs[key] != nil && len(s) == 0:
		return "failed"
	case len(s) == 0:
		return "–"
	case r.errs[key] != nil:
		return fmt.Sprintf("%s (%d, then failed)", fmtDur(s.median()), len(s))
	}
	return fmt.Sprintf("%s (%d)", fmtDur(s.median()), len(s))
}

func verdict(measured, met bool) string {
	switch {
	case !measured:
		return "not measured"
	case met:
		return "**met**"
	default:
		return "**not met**"
	}
}

// shortSize: 1 GiB -> 1G, 640 MiB -> 640M.
func shortSize(b int64) string {
	s := sizeString(b)
	return strings.ReplaceAll(strings.ReplaceAll(s, " GiB", "G"), " MiB", "M")
}
