package main

// The environment a run happened in, and the table it produced.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type results map[string]map[string]measurement // row id -> target -> measurement

func (res results) set(r row, target string, m measurement) {
	if res[r.id()] == nil {
		res[r.id()] = map[string]measurement{}
	}
	res[r.id()][target] = m
}

func (res results) get(r row, target string) (measurement, bool) {
	m, ok := res[r.id()][target]
	return m, ok
}

func (res results) anyError() bool {
	for _, byTarget := range res {
		for _, m := range byTarget {
			if m.err != nil {
				return true
			}
		}
	}
	return false
}

// env is the machine and tool versions, for the report header.
type env struct {
	date, cpus, memory, kernel, disk, fio, qsd, qemuImg, cp, vafs, gofuse string
	loadStart                                                             string // /proc/loadavg when the run began
}

func collectEnv(ctx context.Context, cfg *config) env {
	e := env{
		date:   cfg.started.UTC().Format("2006-01-02 15:04 MST"),
		cpus:   fmt.Sprintf("%d × %s", runtime.NumCPU(), firstMatch("/proc/cpuinfo", "model name")),
		memory: memTotal(),
		kernel: readTrim("/proc/sys/kernel/osrelease"),
		disk:   describeDisk(cfg.workDir),
		// Other work on the machine skews every column; say how busy it was.
		loadStart: loadAvg(),
	}
	if out, err := runCmd(ctx, 10*time.Second, "fio", "--version"); err == nil {
		e.fio = strings.TrimSpace(out)
	}
	fioTargets := func(names ...string) bool {
		if !contains(cfg.sections, "fio") {
			return false
		}
		for _, n := range names {
			if contains(cfg.targets, n) {
				return true
			}
		}
		return false
	}
	if fioTargets("qsd") || contains(cfg.sections, "depth") {
		if out, err := runCmd(ctx, 10*time.Second, "qemu-storage-daemon", "--version"); err == nil {
			e.qsd = firstLine(out)
		}
	}
	if contains(cfg.sections, "clone") || contains(cfg.sections, "depth") {
		if out, err := runCmd(ctx, 10*time.Second, "qemu-img", "--version"); err == nil {
			e.qemuImg = firstLine(out)
		}
	}
	if contains(cfg.sections, "clone") {
		if out, err := runCmd(ctx, 10*time.Second, "cp", "--version"); err == nil {
			e.cp = firstLine(out)
		}
	}
	if fioTargets("vafs", "loopback") || len(cfg.sections) > 1 || cfg.sections[0] != "fio" {
		if out, err := runCmd(ctx, 10*time.Second, cfg.vafsBin, "version"); err == nil {
			e.vafs = firstLine(out)
		}
		// The loopback is go-fuse as linked into the engine.
		if out, err := runCmd(ctx, 10*time.Second, "go", "version", "-m", engineBin(cfg)); err == nil {
			for _, l := range strings.Split(out, "\n") {
				if f := strings.Fields(l); len(f) >= 3 && f[0] == "dep" && f[1] == "github.com/hanwen/go-fuse/v2" {
					e.gofuse = f[2]
				}
			}
		}
	}
	return e
}

func memTotal() string {
	f := strings.Fields(firstMatch("/proc/meminfo", "MemTotal")) // "24684084 kB"
	if len(f) == 2 && f[1] == "kB" {
		if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return strings.Join(f, " ")
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	f := strings.Fields(readTrim("/proc/loadavg"))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// firstMatch returns the value of the first "key: value" line of a /proc file.
func firstMatch(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "unknown"
}

// describeDisk names the block device and file system under dir.
func describeDisk(dir string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return "unknown"
	}
	// The mount whose device is dir's device, from mountinfo (field 3 is
	// major:minor, then mount point, ..., after " - ": fstype, source).
	devID := fmt.Sprintf("%d:%d", unixMajor(st.Dev), unixMinor(st.Dev))
	source, fstype := "unknown", "unknown"
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			pre, post, ok := strings.Cut(sc.Text(), " - ")
			fields, tailFields := strings.Fields(pre), strings.Fields(post)
			if ok && len(fields) > 2 && fields[2] == devID && len(tailFields) >= 2 {
				fstype, source = tailFields[0], tailFields[1]
				break
			}
		}
		f.Close()
	}
	desc := fmt.Sprintf("%s (%s)", source, fstype)
	// Block device details from sysfs: size, rotational flag, model.
	sys := "/sys/dev/block/" + devID
	if target, err := filepath.EvalSymlinks(sys); err == nil {
		dev := target
		if _, err := os.Stat(filepath.Join(dev, "partition")); err == nil {
			dev = filepath.Dir(dev) // a partition: the queue lives on the disk
		}
		var parts []string
		if n, err := strconv.ParseInt(readTrim(filepath.Join(target, "size")), 10, 64); err == nil {
			parts = append(parts, fmt.Sprintf("%d GiB", n*512>>30))
		}
		if rot := readTrim(filepath.Join(dev, "queue", "rotational")); rot != "unknown" {
			parts = append(parts, "rotational="+rot)
		}
		if model := readTrim(filepath.Join(dev, "device", "model")); model != "unknown" && model != "" {
			parts = append(parts, "model "+model)
		}
		if drv, err := os.Readlink(filepath.Join(dev, "device", "driver")); err == nil {
			parts = append(parts, "driver "+filepath.Base(drv))
		} else if drv, err := os.Readlink(filepath.Join(dev, "device", "device", "driver")); err == nil {
			parts = append(parts, "driver "+filepath.Base(drv))
		}
		if len(parts) != 0 {
			desc += ", " + strings.Join(parts, ", ")
		}
	}
	return desc
}

func unixMajor(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&^0xfff }
func unixMinor(dev uint64) uint64 { return dev&0xff | (dev>>12)&^0xff }

type report struct {
	terminal string // for the terminal: the results of every section
	markdown string // for docs/bench.md
}

func renderReport(cfg *config, e env, outs []*sectionOut) report {
	var b strings.Builder
	fmt.Fprintf(&b, "# vafs benchmarks\n\n")
	fmt.Fprintf(&b, "Generated by `go run ./integration/bench` (`npx -y rust-just bench`); do not edit by hand. ")
	if cfg.quick {
		fmt.Fprintf(&b, "**This is a `-quick` smoke run (short jobs, small files): the figures are indicative only.**")
	}
	if len(cfg.sections) != len(allSections) {
		fmt.Fprintf(&b, " Only the sections %s were run.", strings.Join(cfg.sections, ", "))
	}
	if contains(cfg.sections, "fio") && len(cfg.rows) != len(rows) {
		ids := make([]string, len(cfg.rows))
		for i, r := range cfg.rows {
			ids[i] = r.label()
		}
		fmt.Fprintf(&b, " Only the fio rows %s were run.", strings.Join(ids, ", "))
	}
	fmt.Fprintf(&b, "\n\nSections, all from one run: ")
	for i, o := range outs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s", o.title)
	}
	fmt.Fprintf(&b, ".\n\n## Machine\n\n")
	fmt.Fprintf(&b, "- date: %s\n", e.date)
	fmt.Fprintf(&b, "- CPUs: %s\n", e.cpus)
	fmt.Fprintf(&b, "- memory: %s\n", e.memory)
	fmt.Fprintf(&b, "- kernel: %s\n", e.kernel)
	fmt.Fprintf(&b, "- load average (1/5/15 min): %s at the start, %s at the end\n", e.loadStart, loadAvg())
	fmt.Fprintf(&b, "- disk under the work directory (`%s`): %s\n", cfg.workDir, e.disk)
	fmt.Fprintf(&b, "- fio: %s\n", orUnknown(e.fio))
	if e.qsd != "" {
		fmt.Fprintf(&b, "- qemu-storage-daemon: %s\n", e.qsd)
	}
	if e.qemuImg != "" {
		fmt.Fprintf(&b, "- qemu-img: %s\n", e.qemuImg)
	}
	if e.cp != "" {
		fmt.Fprintf(&b, "- cp: %s\n", e.cp)
	}
	if e.vafs != "" {
		fmt.Fprintf(&b, "- vafs: %s\n", e.vafs)
	}
	if e.gofuse != "" {
		fmt.Fprintf(&b, "- go-fuse (in the vafs binary): %s\n", e.gofuse)
	}

	var term strings.Builder
	for _, o := range outs {
		fmt.Fprintf(&b, "\n## %s\n\n", o.title)
		if o.method != "" {
			fmt.Fprintf(&b, "### Method\n\n%s\n", strings.TrimRight(o.method, "\n")+"\n")
		}
		fmt.Fprintf(&b, "### Results\n\n")
		if o.results != "" {
			fmt.Fprintf(&b, "%s", strings.TrimRight(o.results, "\n")+"\n")
		}
		if o.err != nil {
			fmt.Fprintf(&b, "\n**This section failed or was measured only in part:** %s\n",
				strings.ReplaceAll(o.err.Error(), "\n", " "))
		}

		fmt.Fprintf(&term, "== %s ==\n\n", o.title)
		if o.results != "" {
			fmt.Fprintf(&term, "%s\n", strings.TrimRight(o.results, "\n"))
		}
		if o.err != nil {
			fmt.Fprintf(&term, "\nFAILED: %v\n", o.err)
		}
		term.WriteString("\n")
	}
	return report{terminal: term.String(), markdown: b.String()}
}

// renderFio renders the fio section.
func renderFio(cfg *config, res results, failed map[string]string) *sectionOut {
	targets := cfg.targets
	subject, bases := ratioColumns(targets)

	header := []string{"workload"}
	header = append(header, targets...)
	for _, b := range bases {
		header = append(header, subject+"/"+b)
	}
	if subject == "" && contains(targets, "plain") {
		for _, t := range targets {
			if t != "plain" {
				header = append(header, t+"/plain")
			}
		}
	}

	var body [][]string
	for _, r := range cfg.rows {
		line := []string{r.label()}
		for _, t := range targets {
			line = append(line, cell(res, r, t, failed))
		}
		ratio := func(a, b string) string {
			ma, oka := res.get(r, a)
			mb, okb := res.get(r, b)
			if !oka || !okb || ma.err != nil || mb.err != nil || mb.iops == 0 {
				return "–"
			}
			return fmt.Sprintf("%.2f×", ma.iops/mb.iops)
		}
		for _, b := range bases {
			line = append(line, ratio(subject, b))
		}
		if subject == "" && contains(targets, "plain") {
			for _, t := range targets {
				if t != "plain" {
					line = append(line, ratio(t, "plain"))
				}
			}
		}
		body = append(body, line)
	}
	table := mdTable(header, body)

	// Latency at queue depth 1 says what one guest request waits for.
	latHeader := []string{"workload (qd1)"}
	for _, t := range targets {
		latHeader = append(latHeader, t+" p50 / p99")
	}
	var latBody [][]string
	for _, r := range cfg.rows {
		if r.iodepth != 1 {
			continue
		}
		line := []string{r.label()}
		for _, t := range targets {
			m, ok := res.get(r, t)
			if !ok || m.err != nil {
				line = append(line, "–")
				continue
			}
			line = append(line, fmt.Sprintf("%s / %s µs", usec(m.latP50), usec(m.latP99)))
		}
		latBody = append(latBody, line)
		if r.fsync != 0 {
			// The write returns before the fsync that follows it: what
			// the guest waits for is mostly the fsync.
			line := []string{r.label() + ": the fsync"}
			for _, t := range targets {
				m, ok := res.get(r, t)
				if !ok || m.err != nil || m.syncP50 == 0 {
					line = append(line, "–")
					continue
				}
				line = append(line, fmt.Sprintf("%s / %s µs", usec(m.syncP50), usec(m.syncP99)))
			}
			latBody = append(latBody, line)
		}
	}
	latTable := mdTable(latHeader, latBody)

	var m strings.Builder
	fmt.Fprintf(&m, "One fio process per cell, one after the other (targets never run concurrently); rows in the order shown, "+
		"and within a row the targets in column order. Before each job: `sync; echo 3 > /proc/sys/vm/drop_caches`.\n\n")
	fmt.Fprintf(&m, "Each target file is first prefilled, so reads hit written data, not holes:\n\n")
	fmt.Fprintf(&m, "    fio %s --filename=FILE --output-format=json\n\n", strings.Join(prefillArgs(cfg), " "))
	fmt.Fprintf(&m, "Then each row runs, for example the first one:\n\n")
	fmt.Fprintf(&m, "    fio %s --filename=FILE --output-format=json\n\n", strings.Join(jobArgs(cfg, cfg.rows[0]), " "))
	fmt.Fprintf(&m, "Rows vary only `--rw` (randread, randwrite, read, write), `--bs` (4k for random, 1M for sequential) and "+
		"`--ioengine`/`--iodepth` (psync/1, libaio/16); the `fdatasync/64` rows add `--fdatasync=64` (an fdatasync after every 64 writes, "+
		"64 MiB), so their data must reach the disk during the job on every target. The `fsync=1` rows add `--fsync=1`: an fsync "+
		"after every 4 KiB write, what a database in a VM with `cache=none` asks of its disk, so every write costs a flush to the "+
		"disk. Figures are IOPS, with MiB/s in parentheses for 1M rows; "+
		"ratios are IOPS ratios (the same as bandwidth ratios). Each job runs a %s ramp (not measured), then is measured for %s.\n\n", cfg.ramp, cfg.runtime)
	if multi := multiRows(cfg.rows); len(multi) != 0 {
		r := multi[0]
		fmt.Fprintf(&m, "The `%d jobs` row runs %d such jobs at once, as %d VMs each doing it, each on a file of its own, every one "+
			"prefilled as above: on `plain` %d files in one directory, on `loopback` and `vafs` %d files in the one mount, on `qsd` "+
			"%d qcow2 images, each exported by a qemu-storage-daemon of its own (as %d VMs' qemu processes would each open their own "+
			"image). Not one file cut in regions: a VM has an image of its own, and what vafs shares between files (its commit) is what "+
			"this row is to show. The figure is the sum of the jobs' IOPS and the latencies are over every job's I/O "+
			"(`--group_reporting`):\n\n", r.numJobs(), r.numJobs(), r.numJobs(), r.numJobs(), r.numJobs(), r.numJobs(), r.numJobs())
		files := make([]string, r.numJobs())
		for i := range files {
			files[i] = fmt.Sprintf("FILE%d", i)
		}
		fmt.Fprintf(&m, "    fio %s --output-format=json\n\n", strings.Join(multiJobArgs(cfg, r, files), " "))
	}
	fmt.Fprintf(&m, "Targets:\n\n")
	for _, t := range targets {
		fmt.Fprintf(&m, "- %s\n", targetDocs[t])
	}
	fmt.Fprintf(&m, "\nReading the figures: the disk is whatever the host gives this machine (a virtio disk may be cached "+
		"by the hypervisor, which is how a \"rotational\" disk can write at GB/s), and the targets differ in where the host "+
		"page cache sits under them (see above). The ratios say how far each FUSE server is from the plain file on the "+
		"same disk at the same moment; the absolute figures say little about other hardware.\n")

	var r strings.Builder
	fmt.Fprintf(&r, "%s\nCompletion latency at queue depth 1 (for the `fsync=1` rows, the write's, then on a line of its own the fsync's "+
		"that follows it, fio's `sync` latency):\n\n%s", table, latTable)
	if len(failed) != 0 {
		fmt.Fprintf(&r, "\nNot measured:\n\n")
		names := make([]string, 0, len(failed))
		for n := range failed {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(&r, "- %s: %s\n", n, strings.ReplaceAll(failed[n], "\n", " "))
		}
	}
	return &sectionOut{title: "fio: vafs next to its yardsticks", method: m.String(), results: r.String()}
}

// multiRows are the rows of several jobs at once.
func multiRows(rs []row) []row {
	var out []row
	for _, r := range rs {
		if r.numJobs() > 1 {
			out = append(out, r)
		}
	}
	return out
}

func cell(res results, r row, t string, failed map[string]string) string {
	if _, ok := failed[t]; ok {
		return "n/a"
	}
	m, ok := res.get(r, t)
	if !ok {
		return "–"
	}
	if m.err != nil {
		return "failed"
	}
	if r.bandwidthRow() {
		return fmt.Sprintf("%s (%s MiB/s)", thousands(m.iops), thousands(m.mibs))
	}
	return thousands(m.iops)
}

func usec(d time.Duration) string {
	return thousands(float64(d) / float64(time.Microsecond))
}

// thousands formats a non-negative figure rounded to an integer, with
// thin separators: 12345.6 -> "12,346".
func thousands(f float64) string {
	s := strconv.FormatInt(int64(f+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// mdTable renders a Markdown table padded so it also reads as plain text.
func mdTable(header []string, body [][]string) string {
	width := make([]int, len(header))
	for i, h := range header {
		width[i] = len([]rune(h))
	}
	for _, line := range body {
		for i, c := range line {
			if n := len([]rune(c)); n > width[i] {
				width[i] = n
			}
		}
	}
	var b strings.Builder
	writeLine := func(cells []string, numeric bool) {
		b.WriteString("|")
		for i, c := range cells {
			pad := strings.Repeat(" ", width[i]-len([]rune(c)))
			if numeric && i > 0 {
				b.WriteString(" " + pad + c + " |")
			} else {
				b.WriteString(" " + c + pad + " |")
			}
		}
		b.WriteString("\n")
	}
	writeLine(header, false)
	b.WriteString("|")
	for i, w := range width {
		if i == 0 {
			b.WriteString(" " + strings.Repeat("-", w) + " |")
		} else {
			b.WriteString(" " + strings.Repeat("-", w-1) + ": |")
		}
	}
	b.WriteString("\n")
	for _, line := range body {
		writeLine(line, true)
	}
	return b.String()
}

// ratioColumns: the subject (vafs if measured) and the targets it is
// compared with; with no vafs column, every other target against plain.
func ratioColumns(targets []string) (subject string, bases []string) {
	if contains(targets, "vafs") {
		for _, t := range targets {
			if t != "vafs" {
				bases = append(bases, t)
			}
		}
		return "vafs", bases
	}
	return "", nil
}
