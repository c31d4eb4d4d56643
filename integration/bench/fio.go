package main

// fio jobs and their JSON output. One fio process per (row, target), run
// one after the other so targets never compete for the disk or the CPUs.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// row is one line of the table: an access pattern at one queue depth.
type row struct {
	rw      string // fio --rw
	bs      string // fio --bs
	engine  string // fio --ioengine
	iodepth int
	sync    int // fio --fdatasync: an fdatasync after every sync writes (0: none)
	fsync   int // fio --fsync: an fsync after every fsync writes (0: none)
	jobs    int // fio jobs at once, each on its own file (0 or 1: one)
}

var rows = []row{
	{rw: "randread", bs: "4k", engine: "psync", iodepth: 1},
	{rw: "randread", bs: "4k", engine: "libaio", iodepth: 16},
	{rw: "randwrite", bs: "4k", engine: "psync", iodepth: 1},
	{rw: "randwrite", bs: "4k", engine: "libaio", iodepth: 16},
	{rw: "read", bs: "1M", engine: "psync", iodepth: 1},
	{rw: "read", bs: "1M", engine: "libaio", iodepth: 16},
	{rw: "write", bs: "1M", engine: "psync", iodepth: 1},
	{rw: "write", bs: "1M", engine: "libaio", iodepth: 16},
	// The same writes with an fdatasync every 64 MiB, as a guest that
	// flushes its disk cache: the data has to reach the disk while the
	// job runs, whichever target it is. Without it a target that writes
	// through the host page cache in place (qsd's qcow2) is measured at
	// memory speed: the 1 GiB file stays dirty in RAM for the whole job.
	{rw: "write", bs: "1M", engine: "psync", iodepth: 1, sync: 64},
	{rw: "write", bs: "1M", engine: "libaio", iodepth: 16, sync: 64},
	// A database in a VM with cache=none: every 4 KiB write is followed by
	// an fsync, so each one costs a device flush (issue 12). Then four of
	// them at once, each on its own file, as four VMs on one host: they
	// show whether concurrent fsyncs share flushes (group commit) or queue.
	{rw: "randwrite", bs: "4k", engine: "psync", iodepth: 1, fsync: 1},
	{rw: "randwrite", bs: "4k", engine: "psync", iodepth: 1, fsync: 1, jobs: 4},
}

// numJobs is how many fio jobs (and files) the row runs at once.
func (r row) numJobs() int { return max(r.jobs, 1) }

func (r row) label() string {
	l := fmt.Sprintf("%s %s %s qd%d", r.bs, r.rw, r.engine, r.iodepth)
	if r.sync != 0 {
		l += fmt.Sprintf(" fdatasync/%d", r.sync)
	}
	if r.fsync != 0 {
		l += fmt.Sprintf(" fsync=%d", r.fsync)
	}
	if r.numJobs() > 1 {
		l += fmt.Sprintf(" %d jobs", r.numJobs())
	}
	return l
}

func (r row) id() string {
	id := fmt.Sprintf("%s-%s-%s-qd%d", r.bs, r.rw, r.engine, r.iodepth)
	if r.sync != 0 {
		id += fmt.Sprintf("-fdatasync%d", r.sync)
	}
	if r.fsync != 0 {
		id += fmt.Sprintf("-fsync%d", r.fsync)
	}
	if r.numJobs() > 1 {
		id += fmt.Sprintf("-%djobs", r.numJobs())
	}
	return id
}

func (r row) isWrite() bool { return strings.Contains(r.rw, "write") }

// bandwidthRow reports whether MiB/s is worth printing next to IOPS.
func (r row) bandwidthRow() bool { return r.bs != "4k" }

// jobArgs are the fio parameters of a measured job, minus the file and the
// output; the report prints them verbatim. A row of several jobs gets
// them as global options, then one --name and --filename per job
// (multiJobArgs).
func jobArgs(cfg *config, r row) []string {
	args := []string{
		"--name=" + r.id(),
		"--rw=" + r.rw,
		"--bs=" + r.bs,
		"--ioengine=" + r.engine,
		"--iodepth=" + strconv.Itoa(r.iodepth),
		"--direct=1",
		"--size=" + strconv.FormatInt(cfg.size, 10),
		"--time_based",
		"--runtime=" + seconds(cfg.runtime),
		"--ramp_time=" + seconds(cfg.ramp),
		"--randrepeat=0",
		"--numjobs=1",
	}
	if r.sync != 0 {
		args = append(args, "--fdatasync="+strconv.Itoa(r.sync))
	}
	if r.fsync != 0 {
		args = append(args, "--fsync="+strconv.Itoa(r.fsync))
	}
	return args
}

// multiJobArgs are the full fio arguments of a row of several jobs, job i
// on files[i]: jobArgs without --name as global options (every job gets
// them), --group_reporting so fio reports one job whose IOPS are the sum
// and whose latency percentiles are over every job's I/O, then a --name
// and a --filename per job.
func multiJobArgs(cfg *config, r row, files []string) []string {
	args := append([]string(nil), jobArgs(cfg, r)[1:]...)
	args = append(args, "--group_reporting")
	for i, f := range files {
		args = append(args, fmt.Sprintf("--name=%s-%d", r.id(), i), "--filename="+f)
	}
	return args
}

// prefillArgs write the whole file once, sequentially, and fsync at the end.
func prefillArgs(cfg *config) []string { return fillArgs(cfg.size) }

// fillArgs write size bytes once, sequentially, and fsync at the end.
func fillArgs(size int64) []string {
	return []string{
		"--name=prefill",
		"--rw=write",
		"--bs=1M",
		"--ioengine=psync",
		"--iodepth=1",
		"--direct=1",
		"--size=" + strconv.FormatInt(size, 10),
		"--end_fsync=1",
	}
}

// fill writes file (size bytes) once, sequentially, with fillArgs.
func fill(ctx context.Context, outDir, id, file string, size int64) error {
	_, err := fioRun(ctx, outDir, id, file, fillArgs(size), 30*time.Minute)
	return err
}

func seconds(d time.Duration) string { return strconv.Itoa(int(d/time.Second)) + "s" }

type measurement struct {
	iops             float64
	mibs             float64       // MiB/s
	latP50, latP99   time.Duration // completion latency percentiles
	syncP50, syncP99 time.Duration // fsync/fdatasync latency percentiles (rows that sync)
	err              error
}

func prefill(ctx context.Context, cfg *config, t *target) error {
	_, err := fio(ctx, cfg, t, "prefill", prefillArgs(cfg), 30*time.Minute)
	return err
}

func runJob(ctx context.Context, cfg *config, t *target, r row) (measurement, error) {
	dropCaches()
	return runJobWarm(ctx, cfg, t, r)
}

// runJobWarm is runJob without dropping the caches first.
func runJobWarm(ctx context.Context, cfg *config, t *target, r row) (measurement, error) {
	timeout := cfg.runtime + cfg.ramp + 5*time.Minute
	var out *fioOutput
	var err error
	if n := r.numJobs(); n > 1 {
		if len(t.files) < n {
			return measurement{}, fmt.Errorf("%d jobs need %d files, %s has %d", n, n, t.name, len(t.files))
		}
		out, err = fioExec(ctx, t.dir, r.id(), multiJobArgs(cfg, r, t.files[:n]), timeout)
	} else {
		out, err = fio(ctx, cfg, t, r.id(), jobArgs(cfg, r), timeout)
	}
	if err != nil {
		return measurement{}, err
	}
	if len(out.Jobs) != 1 {
		return measurement{}, fmt.Errorf("fio reported %d jobs, want 1", len(out.Jobs))
	}
	j := out.Jobs[0]
	if j.Error != 0 {
		return measurement{}, fmt.Errorf("fio job error %d (%s)", j.Error, syscall.Errno(j.Error))
	}
	side := j.Read
	if r.isWrite() {
		side = j.Write
	}
	if side.IOPS == 0 {
		return measurement{}, fmt.Errorf("fio measured no I/O")
	}
	return measurement{
		iops:    side.IOPS,
		mibs:    float64(side.BWBytes) / (1 << 20),
		latP50:  time.Duration(side.ClatNs.Percentile["50.000000"]),
		latP99:  time.Duration(side.ClatNs.Percentile["99.000000"]),
		syncP50: time.Duration(j.Sync.LatNs.Percentile["50.000000"]),
		syncP99: time.Duration(j.Sync.LatNs.Percentile["99.000000"]),
	}, nil
}

// fio runs one job against t.file and decodes its JSON output.
func fio(ctx context.Context, cfg *config, t *target, id string, args []string, timeout time.Duration) (*fioOutput, error) {
	return fioRun(ctx, t.dir, id, t.file, args, timeout)
}

// fioRun runs one job against file and decodes its JSON output, which goes
// to outDir/fio-ID.json (stdout can carry warnings before the JSON).
func fioRun(ctx context.Context, outDir, id, file string, args []string, timeout time.Duration) (*fioOutput, error) {
	return fioExec(ctx, outDir, id, append(append([]string(nil), args...), "--filename="+file), timeout)
}

// fioExec runs fio with args (which name the files) and decodes its JSON
// output, which goes to outDir/fio-ID.json.
func fioExec(ctx context.Context, outDir, id string, args []string, timeout time.Duration) (*fioOutput, error) {
	outPath := filepath.Join(outDir, "fio-"+id+".json")
	args = append(append([]string(nil), args...), "--output-format=json", "--output="+outPath)
	if _, err := runCmd(ctx, timeout, "fio", args...); err != nil {
		return nil, err
	}
	return decodeFio(outPath)
}

// decodeFio reads the JSON output fio wrote to outPath.
func decodeFio(outPath string) (*fioOutput, error) {
	raw, err := os.ReadFile(outPath)
	if err != nil {
		return nil, err
	}
	if i := strings.IndexByte(string(raw), '{'); i > 0 {
		raw = raw[i:]
	}
	var out fioOutput
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("decode %s: %w", outPath, err)
	}
	return &out, nil
}

type fioOutput struct {
	Version string `json:"fio version"`
	Jobs    []struct {
		Error int     `json:"error"`
		Read  fioSide `json:"read"`
		Write fioSide `json:"write"`
		// Sync is fio's fsync/fdatasync statistics (--fsync, --fdatasync):
		// each call's latency, not counted in Write.
		Sync struct {
			TotalIOs int64 `json:"total_ios"`
			LatNs    struct {
				Percentile map[string]float64 `json:"percentile"`
			} `json:"lat_ns"`
		} `json:"sync"`
	} `json:"jobs"`
}

type fioSide struct {
	IOPS     float64 `json:"iops"`
	TotalIOs int64   `json:"total_ios"`
	BWBytes  int64   `json:"bw_bytes"`
	ClatNs   struct {
		Percentile map[string]float64 `json:"percentile"`
	} `json:"clat_ns"`
}

// dropCaches starts every job from the same state: what a previous job left
// in the host page cache (qsd's qcow2 file, a FUSE daemon's backing store)
// is gone. Best effort: without root it does nothing.
func dropCaches() {
	syscall.Sync()
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}
