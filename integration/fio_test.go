package integration

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fioErr matches a job that ended with a non-zero error code.
var fioErr = regexp.MustCompile(`err=\s*[1-9][0-9]*`)

type fioJob struct {
	name    string
	rw      string // randwrite, write
	bs      string
	size    string
	engine  string // psync, libaio
	direct  bool
	iodepth string
	numjobs int // >1: that many processes, each on its own file
}

func (j fioJob) args(dir string, verifyOnly bool) []string {
	direct := "0"
	if j.direct {
		direct = "1"
	}
	a := []string{"--name=" + j.name}
	if j.numjobs > 1 {
		a = append(a, "--directory="+dir, "--numjobs="+strconv.Itoa(j.numjobs))
	} else {
		a = append(a, "--filename="+dir+"/"+j.name+".dat")
	}
	a = append(a,
		"--rw="+j.rw,
		"--bs="+j.bs,
		"--size="+j.size,
		"--ioengine="+j.engine,
		"--iodepth="+j.iodepth,
		"--direct="+direct,
		"--verify=crc32c",
		"--do_verify=1",
		"--verify_fatal=1",
		"--verify_dump=0",
		"--verify_state_save=0", // no *.state files in the working directory
		"--randrepeat=1",
		"--randseed=20240601",
		"--group_reporting",
	)
	if verifyOnly {
		a = append(a, "--verify_only")
	}
	return a
}

// runFio runs one job and fails on a non-zero exit or a verify complaint.
func runFio(t *testing.T, j fioJob, dir string, verifyOnly bool) {
	t.Helper()
	args := j.args(dir, verifyOnly)
	out, err := runCmd(t, 4*time.Minute, "fio", args...)
	bad := fioErr.FindString(out)
	for _, s := range []string{"verify: bad", "bad magic", "verify failed", "fio: pid=", "Input/output error", "No space"} {
		if bad == "" && strings.Contains(out, s) {
			bad = s
		}
	}
	if err != nil || bad != "" {
		t.Fatalf("fio %s (verify_only=%v): err=%v, found %q\n%s", strings.Join(args, " "), verifyOnly, err, bad, out)
	}
}

// TestFioVerify: fio writes with crc32c verification (random 4k and sequential 1M,
// psync and libaio, O_DIRECT and buffered), then verifies the same files again
// after the mount was stopped and started.
func TestFioVerify(t *testing.T) {
	requireTools(t, "fio")
	jobs := []fioJob{
		{"rand4k-psync-direct", "randwrite", "4k", "64m", "psync", true, "1", 0},
		{"rand4k-libaio-direct", "randwrite", "4k", "64m", "libaio", true, "16", 0},
		{"rand4k-psync-buffered", "randwrite", "4k", "64m", "psync", false, "1", 0},
		{"seq1m-libaio-direct", "write", "1m", "128m", "libaio", true, "8", 0},
		{"seq1m-psync-buffered", "write", "1m", "128m", "psync", false, "1", 0},
		{"rand64k-libaio-buffered", "randwrite", "64k", "64m", "libaio", false, "8", 0},
		// Four processes at once, each on its own volume.
		{"rand4k-libaio-direct-x4", "randwrite", "4k", "32m", "libaio", true, "8", 4},
	}
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	for _, j := range jobs {
		start := time.Now()
		runFio(t, j, mnt, false)
		t.Logf("fio %s: write+verify %v", j.name, time.Since(start).Round(time.Millisecond))
	}
	m.Stop()

	m = startMount(t, data, mnt)
	for _, j := range jobs {
		start := time.Now()
		runFio(t, j, mnt, true)
		t.Logf("fio %s: verify_only after remount %v", j.name, time.Since(start).Round(time.Millisecond))
	}
	m.Stop()
	checkFsck(t, data)
}
