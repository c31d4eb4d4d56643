package main

// The depth section: do reads slow down as snapshots pile up? A vafs
// lookup walks one tree whatever the number of snapshots; a qcow2 read of
// a cluster no overlay holds walks the backing chain. Three volumes get
// the same random 4k writes, round after round:
//
//	vafs      a vafs volume with a snapshot after every round
//	control   a vafs volume with the same writes and no snapshots, so the
//	          effect of the layout the writes leave can be told apart from
//	          the effect of the snapshots
//	qcow2     a qcow2 backing chain with a new overlay for every round
//
// and at each measured depth all three are read with fio.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var depthKinds = []string{"vafs", "control", "qcow2"}

// depthRows are the fio rows of this section: 4k random reads at queue
// depth 1 and 16, as in the fio section.
var depthRows = []row{rows[0], rows[1]}

type depthResult struct {
	depths  []int                                     // measured, in order
	m       map[int]map[string]map[string]measurement // depth -> kind -> row id -> measurement
	snap    map[int]samples                           // depth -> `vafs snapshot create` times of the rounds leading to it
	overlay map[int]samples                           // depth -> qemu-img create + qemu-io times of the rounds leading to it
	chain   int64                                     // bytes of the qcow2 chain at the last depth
	df      *dfUsage                                  // vafs df of the snapshotted volume's mount at the last depth
	dfErr   error
	work    map[int]map[string]readWork // depth -> vafs kind -> cold work per read
}

// readWork is what one cold 4k read cost the vafs mount process, from its
// own counters (/proc/PID/stat and /proc/PID/io) around a fixed number of
// reads: CPU time and bytes it caused to be read from the disk. Unlike
// IOPS, these do not move with the load of the machine or with how fast
// the virtual disk under it answers at that moment.
type readWork struct {
	reads     int64
	cpu       time.Duration // per read
	diskBytes float64       // per read
	err       error
}

func (d *depthResult) set(depth int, kind string, r row, m measurement) {
	if d.m[depth] == nil {
		d.m[depth] = map[string]map[string]measurement{}
	}
	if d.m[depth][kind] == nil {
		d.m[depth][kind] = map[string]measurement{}
	}
	d.m[depth][kind][r.id()] = m
}

func (d *depthResult) get(depth int, kind string, r row) (measurement, bool) {
	m, ok := d.m[depth][kind][r.id()]
	return m, ok && m.err == nil
}

func runDepthSection(ctx context.Context, cfg *config, td *teardown) (*sectionOut, error) {
	out := &sectionOut{title: "Reads after snapshots: 0 to " + thousands(float64(cfg.depths[len(cfg.depths)-1])) + " snapshots",
		method: depthMethod(cfg)}
	if err := checkCLI(ctx, cfg, "snapshot"); err != nil {
		return out, err
	}
	maxDepth := cfg.depths[len(cfg.depths)-1]
	// qemu-io and qemu-storage-daemon hold every image of the chain open.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(maxDepth)+256 {
		return out, fmt.Errorf("the open file limit (%d) is too low for a qcow2 chain of %d images; raise it with ulimit -n", lim.Cur, maxDepth+1)
	}
	res := &depthResult{m: map[int]map[string]map[string]measurement{}, snap: map[int]samples{}, overlay: map[int]samples{},
		work: map[int]map[string]readWork{}}
	err := depthRun(ctx, cfg, td, res)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	out.results = renderDepth(cfg, res)
	return out, err
}

func depthRun(ctx context.Context, cfg *config, td *teardown, res *depthResult) error {
	dir := filepath.Join(cfg.workDir, "depth")
	qdir := filepath.Join(dir, "qcow2")
	if err := os.MkdirAll(qdir, 0o755); err != nil {
		return err
	}
	vm, err := mountVafs(ctx, cfg, filepath.Join(dir, "vafs"), "vafs (depth)", td)
	if err != nil {
		return err
	}
	cm, err := mountVafs(ctx, cfg, filepath.Join(dir, "control"), "vafs (depth control)", td)
	if err != nil {
		return err
	}
	files := map[string]string{
		"vafs":    filepath.Join(vm.mnt, "vol.raw"),
		"control": filepath.Join(cm.mnt, "vol.raw"),
	}
	logf("depth: filling the volumes (%s each)", sizeString(cfg.size))
	for _, k := range []string{"vafs", "control"} {
		if err := fill(ctx, dir, "fill-"+k, files[k], cfg.size); err != nil {
			return fmt.Errorf("fill %s: %w", k, err)
		}
	}
	top := filepath.Join(qdir, "base.qcow2")
	if err := fillQcow2(ctx, top, cfg.size); err != nil {
		return err
	}

	var errs []error
	round := 0
	for _, depth := range cfg.depths {
		var snaps, overlays samples
		if round < depth {
			sub := &teardown{}
			td.add("qcow2 chain builder", sub.run)
			chain, err := openChain(ctx, qdir, top, sub)
			if err != nil {
				_ = sub.run()
				return fmt.Errorf("qcow2 chain at depth %d: %w", round, err)
			}
			for round < depth {
				round++
				if round%100 == 0 || round == depth {
					logf("depth: round %d of %d", round, cfg.depths[len(cfg.depths)-1])
				}
				offs, data := roundWrites(cfg, round)
				if err := writeBlocks(files["vafs"], offs, data); err != nil {
					_ = sub.run()
					return fmt.Errorf("round %d: vafs: %w", round, err)
				}
				d, err := timeRun(ctx, time.Minute, cfg.vafsBin, "snapshot", "create", files["vafs"], "s"+strconv.Itoa(round))
				if err != nil {
					_ = sub.run()
					return fmt.Errorf("round %d: %w", round, err)
				}
				snaps = append(snaps, d)
				if err := writeBlocks(files["control"], offs, data); err != nil {
					_ = sub.run()
					return fmt.Errorf("round %d: control: %w", round, err)
				}
				start := time.Now()
				if err := chain.overlay(filepath.Join(qdir, fmt.Sprintf("ovl-%04d.qcow2", round)), fmt.Sprintf("o%d", round)); err != nil {
					_ = sub.run()
					return fmt.Errorf("round %d: qcow2: %w", round, err)
				}
				if err := writeBlocks(chain.export, offs, data); err != nil {
					_ = sub.run()
					return fmt.Errorf("round %d: qcow2: %w", round, err)
				}
				overlays = append(overlays, time.Since(start))
			}
			top = chain.top
			if err := sub.run(); err != nil {
				return err
			}
		}
		res.snap[depth], res.overlay[depth] = snaps, overlays
		if err := checkSnapshots(ctx, cfg, files["vafs"], depth); err != nil {
			return err
		}
		// Cold caches for every volume, as for the qcow2 chain's fresh
		// daemon: what a VM reads after its host restarted.
		if vm, err = vm.remount(ctx, cfg, "vafs (depth)", td); err != nil {
			return err
		}
		if cm, err = cm.remount(ctx, cfg, "vafs (depth control)", td); err != nil {
			return err
		}
		res.depths = append(res.depths, depth)
		errs = append(errs, measureDepth(ctx, cfg, td, dir, depth, files, top, res))
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	// df is context, not a measurement: its failure is a note.
	if u, err := vafsDF(ctx, cfg, vm.mnt); err == nil {
		res.df = &u
	} else {
		res.dfErr = err
	}
	if n, err := duBytes(ctx, qdir); err == nil {
		res.chain = n
	}
	return errors.Join(errs...)
}

// measureDepth runs the depth rows on the three volumes; the qcow2 chain
// is exported by a qemu-storage-daemon started for the purpose (so its
// caches start cold, as a VM's would after a restart) and stopped after.
func measureDepth(ctx context.Context, cfg *config, td *teardown, dir string, depth int, files map[string]string,
	top string, res *depthResult) error {
	var errs []error
	for _, kind := range depthKinds {
		t := &target{name: kind, dir: filepath.Join(dir, fmt.Sprintf("fio-%s-d%d", kind, depth)), file: files[kind]}
		if err := os.MkdirAll(t.dir, 0o755); err != nil {
			return err
		}
		sub := &teardown{}
		if kind == "qcow2" {
			td.add(fmt.Sprintf("qsd (depth %d)", depth), sub.run)
			export, err := exportQcow2(ctx, t.dir, top, fmt.Sprintf("qsd (depth %d)", depth), sub)
			if err != nil {
				_ = sub.run()
				for _, r := range depthRows {
					res.set(depth, kind, r, measurement{err: err})
				}
				errs = append(errs, fmt.Errorf("depth %d: qcow2: %w", depth, err))
				continue
			}
			t.file = export
		}
		for _, r := range depthRows {
			logf("depth %d: %s %s", depth, r.label(), kind)
			m, err := runJob(ctx, cfg, t, r)
			if err != nil {
				if ctx.Err() != nil {
					_ = sub.run()
					return ctx.Err()
				}
				errs = append(errs, fmt.Errorf("depth %d: %s %s: %w", depth, kind, r.label(), err))
				m = measurement{err: err}
			}
			res.set(depth, kind, r, m)
		}
		if kind != "qcow2" {
			w := measureWork(ctx, cfg, t)
			if w.err != nil {
				errs = append(errs, fmt.Errorf("depth %d: %s: work per read: %w", depth, kind, w.err))
			}
			if res.work[depth] == nil {
				res.work[depth] = map[string]readWork{}
			}
			res.work[depth][kind] = w
		}
		// Warm: the whole volume read once in order through the mount (or
		// the export), then the same jobs with the caches left as they
		// are. The disk is out of the picture; what is left is the cost
		// of finding a block, which is what a deeper history could raise.
		logf("depth %d: warming %s", depth, kind)
		if _, err := fioRun(ctx, t.dir, "warmup", t.file, warmupArgs(cfg.size), 30*time.Minute); err != nil {
			errs = append(errs, fmt.Errorf("depth %d: %s: warm-up read: %w", depth, kind, err))
		} else {
			for _, r := range depthRows {
				logf("depth %d: %s %s (warm)", depth, r.label(), kind)
				m, err := runJobWarm(ctx, cfg, t, r)
				if err != nil {
					if ctx.Err() != nil {
						_ = sub.run()
						return ctx.Err()
					}
					errs = append(errs, fmt.Errorf("depth %d: %s %s (warm): %w", depth, kind, r.label(), err))
					m = measurement{err: err}
				}
				res.set(depth, warmKind(kind), r, m)
			}
		}
		if err := sub.run(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func warmKind(kind string) string { return kind + " (warm)" }

// warmupArgs read a volume once, in order, around the kernel's cache of
// the FUSE file (direct), so the daemon behind it caches what it reads.
func warmupArgs(size int64) []string {
	return []string{"--name=warmup", "--rw=read", "--bs=1M", "--ioengine=psync", "--iodepth=1", "--direct=1",
		"--size=" + strconv.FormatInt(size, 10)}
}

// workReads is how many cold reads measureWork times.
const workReads = 20000

// measureWork drops the caches and reads workReads random 4k blocks of
// t.file at queue depth 1, sampling the mount process's counters around
// the job.
func measureWork(ctx context.Context, cfg *config, t *target) readWork {
	mnt := filepath.Dir(t.file)
	pids := findByArg(cfg.vafsBin, mnt)
	if len(pids) != 1 {
		return readWork{err: fmt.Errorf("want one process serving %s, found %v", mnt, pids)}
	}
	pid := pids[0]
	n := int64(min(workReads, cfg.size/4096))
	dropCaches()
	cpu0, io0, err := procCounters(pid)
	if err != nil {
		return readWork{err: err}
	}
	args := []string{"--name=work", "--rw=randread", "--bs=4k", "--ioengine=psync", "--iodepth=1", "--direct=1",
		"--size=" + strconv.FormatInt(cfg.size, 10), "--number_ios=" + strconv.FormatInt(n, 10), "--randrepeat=0"}
	out, err := fioRun(ctx, t.dir, "work", t.file, args, 10*time.Minute)
	if err != nil {
		return readWork{err: err}
	}
	cpu1, io1, err := procCounters(pid)
	if err != nil {
		return readWork{err: err}
	}
	if len(out.Jobs) != 1 || out.Jobs[0].Read.TotalIOs == 0 {
		return readWork{err: fmt.Errorf("fio measured no reads")}
	}
	reads := out.Jobs[0].Read.TotalIOs
	return readWork{reads: reads, cpu: (cpu1 - cpu0) / time.Duration(reads), diskBytes: float64(io1-io0) / float64(reads)}
}

// procCounters are a process's CPU time (user + system, all threads) and
// the bytes it caused to be read from storage (read_bytes of /proc/PID/io:
// page cache misses and readahead, not hits).
func procCounters(pid int) (time.Duration, int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(io), "\n") {
		if v, ok := strings.CutPrefix(line, "read_bytes: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Duration(ut+st) * tick, n, err
		}
	}
	return 0, 0, fmt.Errorf("/proc/%d/io has no read_bytes", pid)
}

// depthIOPSTable is one row's IOPS table; name maps a volume kind to the
// kind its measurements are stored under (cold or warm).
func depthIOPSTable(res *depthResult, r row, name func(string) string) string {
	header := []string{"depth (" + r.label() + ")"}
	for _, k := range depthKinds {
		header = append(header, k, k+" ×d0")
	}
	header = append(header, "vafs/control", "vafs/qcow2")
	var body [][]string
	for _, d := range res.depths {
		line := []string{thousands(float64(d))}
		for _, k := range depthKinds {
			m, ok := res.get(d, name(k), r)
			m0, ok0 := res.get(0, name(k), r)
			switch {
			case !ok:
				line = append(line, "failed", "–")
			case !ok0 || m0.iops == 0:
				line = append(line, thousands(m.iops), "–")
			default:
				line = append(line, thousands(m.iops), fmt.Sprintf("%.2f×", m.iops/m0.iops))
			}
		}
		ratio := func(a, c string) string {
			ma, oka := res.get(d, name(a), r)
			mc, okc := res.get(d, name(c), r)
			if !oka || !okc || mc.iops == 0 {
				return "–"
			}
			return fmt.Sprintf("%.2f×", ma.iops/mc.iops)
		}
		line = append(line, ratio("vafs", "control"), ratio("vafs", "qcow2"))
		body = append(body, line)
	}
	return mdTable(header, body)
}

// roundWrites are the blocks a round writes, the same for all three
// volumes: distinct random 4 KiB blocks, each with random content.
func roundWrites(cfg *config, round int) ([]int64, [][]byte) {
	rng := rand.New(rand.NewPCG(0x5eed, uint64(round)))
	nblocks := cfg.size / 4096
	seen := map[int64]bool{}
	var offs []int64
	var data [][]byte
	for len(offs) < cfg.roundWrites {
		b := rng.Int64N(nblocks)
		if seen[b] {
			continue
		}
		seen[b] = true
		offs = append(offs, b*4096)
		buf := make([]byte, 4096)
		for i := 0; i < len(buf); i += 8 {
			v := rng.Uint64()
			for j := 0; j < 8; j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		data = append(data, buf)
	}
	return offs, data
}

// writeBlocks writes the round's blocks into a vafs volume and fsyncs it.
func writeBlocks(path string, offs []int64, data [][]byte) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	for i, off := range offs {
		if _, err := f.WriteAt(data[i], off); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// fillQcow2 creates the chain's base image and writes it in full, in
// order, so its clusters are laid out like a prefilled file.
func fillQcow2(ctx context.Context, img string, size int64) error {
	if _, err := runCmd(ctx, time.Minute, "qemu-img", "create", "-q", "-f", "qcow2", img, strconv.FormatInt(size, 10)); err != nil {
		return err
	}
	args := []string{"-f", "qcow2", img}
	const chunk = 64 << 20
	for off := int64(0); off < size; off += chunk {
		n := min(chunk, size-off)
		args = append(args, "-c", fmt.Sprintf("write -q -P 0x5a %d %d", off, n))
	}
	_, err := runCmd(ctx, 30*time.Minute, "qemu-io", args...)
	return err
}

// checkSnapshots makes sure the volume really has depth snapshots: a
// figure at depth 1,000 means nothing if the snapshots were not taken.
func checkSnapshots(ctx context.Context, cfg *config, file string, depth int) error {
	out, err := runCmd(ctx, time.Minute, cfg.vafsBin, "snapshot", "list", "--json", file)
	if err != nil {
		return err
	}
	var list []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(jsonPart(out)), &list); err != nil {
		return fmt.Errorf("vafs snapshot list --json: %w: %s", err, tail(out, 300))
	}
	if len(list) != depth {
		return fmt.Errorf("vafs snapshot list shows %d snapshots, want %d", len(list), depth)
	}
	return nil
}

// duBytes is `du -sb DIR`: apparent bytes of everything under dir.
func duBytes(ctx context.Context, dir string) (int64, error) {
	out, err := runCmd(ctx, time.Minute, "du", "-sb", dir)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		return 0, fmt.Errorf("du -sb %s: no output", dir)
	}
	return strconv.ParseInt(f[0], 10, 64)
}

func depthMethod(cfg *config) string {
	var b strings.Builder
	depths := make([]string, len(cfg.depths))
	for i, d := range cfg.depths {
		depths[i] = thousands(float64(d))
	}
	fmt.Fprintf(&b, "Three volumes of %s, each first written in full and in order (vafs volumes with "+
		"`fio %s`; the qcow2 base with `qemu-img create -f qcow2` and `qemu-io -c 'write -P 0x5a OFF 64M'` over the whole image), "+
		"then taken through the same rounds. A round writes %d distinct random 4 KiB blocks (the same blocks and bytes in the "+
		"three volumes, from a seeded generator) and then:\n\n",
		sizeString(cfg.size), strings.Join(fillArgs(cfg.size), " "), cfg.roundWrites)
	fmt.Fprintf(&b, "- `vafs`: a vafs volume (its own mount); the blocks are written with pwrite and fsync, then "+
		"`vafs snapshot create FILE sN`.\n")
	fmt.Fprintf(&b, "- `control`: a vafs volume on another mount with the same writes and no snapshots: its figures move only "+
		"with the layout the random writes leave in the segments, so `vafs`/`control` isolates the cost of the snapshots.\n")
	fmt.Fprintf(&b, "- `qcow2`: a backing chain grown as a running VM's is: one qemu-storage-daemon holds the chain open "+
		"(`--blockdev` file + qcow2 on the top image, a FUSE export of it, a QMP monitor); each round, QMP "+
		"`blockdev-snapshot-sync` puts a new qcow2 overlay on top (what libvirt does for an external snapshot), and the "+
		"round's writes go with pwrite and fsync through the export into it. With qcow2's default 64 KiB clusters, each "+
		"4 KiB write allocates a cluster in the overlay. (`qemu-img create -b` plus `qemu-io` per round reopens the whole "+
		"chain twice a round: 2.7 s a round at depth 200 on this 2-core machine under load, hours for 1,000.)\n\n")
	fmt.Fprintf(&b, "At depths %s (snapshots, or overlays over the base) each volume is read with the first two rows of the fio "+
		"section (4k randread, psync qd1 and libaio qd16, direct, over the whole volume, %s ramp, %s measured, "+
		"caches dropped before each job):\n\n", strings.Join(depths, ", "), cfg.ramp, cfg.runtime)
	fmt.Fprintf(&b, "    fio %s --filename=FILE --output-format=json\n\n", strings.Join(jobArgs(cfg, depthRows[0]), " "))
	fmt.Fprintf(&b, "Every volume is read with cold caches: before each depth both vafs data dirs are unmounted (`vafs umount`) and "+
		"mounted again, and the chain's top image is exported by a fresh qemu-storage-daemon, as in the fio section's "+
		"`qsd` target (the backing chain opened from the image headers), stopped after its jobs. "+
		"Before each depth, `vafs snapshot list --json` must show exactly that many snapshots. Ratios `×d0` are IOPS "+
		"against the same volume at depth 0.\n\n")
	fmt.Fprintf(&b, "Cold IOPS measure the disk as much as vafs: on this virtual disk the latency of a read depends on where "+
		"and when the block was written and on what the host is doing, and it moves between runs minutes apart; the "+
		"`control` column, read at the same moments, shows how much. So two more measurements per depth:\n\n")
	fmt.Fprintf(&b, "- Work per cold read, vafs volumes only: after the cold jobs, the caches are dropped again and %s random "+
		"4k reads run at queue depth 1 (`fio --number_ios`); the mount process's CPU time (utime + stime, /proc/PID/stat) "+
		"and the bytes it caused to be read from the disk (read_bytes, /proc/PID/io) are sampled around the job and "+
		"divided by the reads fio counted. These are the mount's own counters: they do not move with the disk's speed.\n", thousands(workReads))
	fmt.Fprintf(&b, "- Warm caches: each volume is read once in order (`fio %s`, through the mount or the export), then the "+
		"two jobs run again without dropping the caches. The disk is out of the picture; what is left is the cost of "+
		"finding a block, which is what a deeper history could raise.\n", strings.Join(warmupArgs(cfg.size), " "))
	return b.String()
}

func renderDepth(cfg *config, res *depthResult) string {
	var b strings.Builder
	for _, r := range depthRows {
		fmt.Fprintf(&b, "%s IOPS, cold caches:\n\n%s\n", r.label(), depthIOPSTable(res, r, func(k string) string { return k }))
	}
	for _, r := range depthRows {
		fmt.Fprintf(&b, "%s IOPS, warm caches:\n\n%s\n", r.label(), depthIOPSTable(res, r, warmKind))
	}
	var workBody [][]string
	for _, d := range res.depths {
		line := []string{thousands(float64(d))}
		for _, k := range []string{"vafs", "control"} {
			w, ok := res.work[d][k]
			if !ok || w.err != nil {
				line = append(line, "–", "–")
				continue
			}
			line = append(line, fmt.Sprintf("%.1f µs", float64(w.cpu)/float64(time.Microsecond)), fmt.Sprintf("%s B", thousands(w.diskBytes)))
		}
		workBody = append(workBody, line)
	}
	if len(workBody) != 0 {
		fmt.Fprintf(&b, "Work per cold read (%s random 4k reads at queue depth 1 after dropping the caches; the mount process's "+
			"CPU time, user + system, and the bytes it had read from the disk, from /proc/PID/stat and /proc/PID/io):\n\n%s\n",
			thousands(workReads), mdTable([]string{"depth", "vafs CPU / read", "vafs disk bytes / read", "control CPU / read",
				"control disk bytes / read"}, workBody))
	}

	latHeader := []string{"depth (" + depthRows[0].label() + ")"}
	for _, k := range depthKinds {
		latHeader = append(latHeader, k+" p50 / p99")
	}
	var latBody [][]string
	for _, d := range res.depths {
		line := []string{thousands(float64(d))}
		for _, k := range depthKinds {
			m, ok := res.get(d, k, depthRows[0])
			if !ok {
				line = append(line, "–")
				continue
			}
			line = append(line, fmt.Sprintf("%s / %s µs", usec(m.latP50), usec(m.latP99)))
		}
		latBody = append(latBody, line)
	}
	fmt.Fprintf(&b, "Completion latency at queue depth 1:\n\n%s\n", mdTable(latHeader, latBody))

	// What building the history cost, per round.
	costHeader := []string{"rounds", "`vafs snapshot create` (median, max)", "qcow2: `blockdev-snapshot-sync` + the round's writes (median, max)"}
	var costBody [][]string
	prev := 0
	for _, d := range res.depths {
		if d == 0 {
			continue
		}
		s, o := res.snap[d], res.overlay[d]
		cell := func(x samples) string {
			if len(x) == 0 {
				return "–"
			}
			return fmt.Sprintf("%s, %s", fmtDur(x.median()), fmtDur(x.max()))
		}
		costBody = append(costBody, []string{fmt.Sprintf("%d–%d", prev+1, d), cell(s), cell(o)})
		prev = d
	}
	if len(costBody) != 0 {
		fmt.Fprintf(&b, "Cost of one round's snapshot (wall clock; vafs: the CLI, start-up included, after the writes), by band of rounds:\n\n%s\n", mdTable(costHeader, costBody))
	}
	if res.df != nil && len(res.depths) != 0 {
		last := res.depths[len(res.depths)-1]
		fmt.Fprintf(&b, "At depth %s: `vafs df` of the snapshotted volume's mount: %d snapshots, logical %s, snapshot logical %s, "+
			"physical %s, stored %s, metadata %s; the qcow2 chain takes %s on disk (`du -sb`).\n",
			thousands(float64(last)), res.df.Snapshots, bytesString(res.df.Logical), bytesString(res.df.SnapshotLogical),
			bytesString(res.df.Physical), bytesString(res.df.Stored), bytesString(res.df.Metadata), bytesString(res.chain))
	}
	if res.dfErr != nil {
		fmt.Fprintf(&b, "`vafs df` of the snapshotted volume's mount failed: %s. The qcow2 chain takes %s on disk (`du -sb`).\n",
			strings.ReplaceAll(res.dfErr.Error(), "\n", " "), bytesString(res.chain))
	}
	return b.String()
}
