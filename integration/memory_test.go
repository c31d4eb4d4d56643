package integration

import (
	"bufio"
	"fmt"
	"io"
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

// hogEnv makes the test binary a memory hog (TestMain): it takes the given
// number of MiB in 16 MiB steps, 100 ms apart, touching every page (a guest
// faulting its memory in), prints "held", and holds it until its stdin
// ends.
const hogEnv = "VAFS_INTEGRATION_HOG"

func runHog(size string) int {
	mib, err := strconv.Atoi(size)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hog:", err)
		return 2
	}
	var held [][]byte
	for got := 0; got < mib; got += 16 {
		b, err := syscall.Mmap(-1, 0, 16<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hog: mmap:", err)
			return 2
		}
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		held = append(held, b)
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Println("held")
	io.Copy(io.Discard, os.Stdin)
	return len(held) & 0 // keep held alive until here
}

// memCgroup is a memory cgroup the test made, v2 or (where the memory
// controller is bound to a v1 hierarchy) v1, with a hard limit.
type memCgroup struct {
	dir string
	v2  bool
}

// newMemCgroup creates a cgroup with the memory limit, removed at cleanup
// (after the processes the test put in it are stopped: register it before
// them). A root test run that cannot make one fails: the test is about
// what happens under a cgroup's limit, and would otherwise pass untested.
func newMemCgroup(t *testing.T, limit int64) *memCgroup {
	t.Helper()
	name := fmt.Sprintf("vafs-test-%d", os.Getpid())
	var c *memCgroup
	if mnt := cgroupMount("cgroup2", ""); mnt != "" && hasWord(filepath.Join(mnt, "cgroup.controllers"), "memory") {
		if !hasWord(filepath.Join(mnt, "cgroup.subtree_control"), "memory") {
			t.Fatalf("cgroup v2 at %s has the memory controller but does not enable it for children (cgroup.subtree_control); this test needs a memory cgroup", mnt)
		}
		c = &memCgroup{dir: filepath.Join(mnt, name), v2: true}
	} else if mnt := cgroupMount("cgroup", "memory"); mnt != "" {
		// v1: a child of this process's own memory cgroup, so that whatever
		// limits the test run limits it too.
		own := ownCgroup(t, "memory")
		c = &memCgroup{dir: filepath.Join(mnt, own, name)}
	} else {
		t.Fatal("no memory cgroup controller: neither cgroup v2 with memory in cgroup.controllers nor a cgroup v1 memory hierarchy is mounted; this test needs one")
	}
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		t.Fatalf("create cgroup %s: %v (as root this must work; this test needs a memory cgroup)", c.dir, err)
	}
	t.Cleanup(func() {
		// Its processes are stopped by their own cleanups; give them a moment
		// to leave, then remove it.
		var err error
		for range 100 {
			if err = os.Remove(c.dir); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("remove cgroup %s: %v (processes: %q)", c.dir, err, readTrim(filepath.Join(c.dir, "cgroup.procs")))
	})
	knob, val := "memory.limit_in_bytes", strconv.FormatInt(limit, 10)
	if c.v2 {
		knob = "memory.max"
		os.WriteFile(filepath.Join(c.dir, "memory.swap.max"), []byte("0"), 0o644) // no swap to hide in
	}
	if err := os.WriteFile(filepath.Join(c.dir, knob), []byte(val), 0o644); err != nil {
		t.Fatalf("set %s/%s to %s: %v", c.dir, knob, val, err)
	}
	return c
}

// wrap returns a command prefix that moves the process into the cgroup and
// execs the rest in the same process.
func (c *memCgroup) wrap() []string {
	return []string{"sh", "-c", `echo $$ > "$0" && exec "$@"`, filepath.Join(c.dir, "cgroup.procs")}
}

// oomKills is how many processes the OOM killer killed in the cgroup.
func (c *memCgroup) oomKills(t *testing.T) int64 {
	t.Helper()
	file := "memory.oom_control" // v1: "oom_kill N"
	if c.v2 {
		file = "memory.events" // "oom_kill N"
	}
	n, ok := keyedValue(filepath.Join(c.dir, file), "oom_kill")
	if !ok {
		t.Fatalf("no oom_kill counter in %s/%s", c.dir, file)
	}
	return n
}

func (c *memCgroup) usage() int64 {
	file := "memory.usage_in_bytes"
	if c.v2 {
		file = "memory.current"
	}
	n, _ := strconv.ParseInt(readTrim(filepath.Join(c.dir, file)), 10, 64)
	return n
}

// cgroupMount finds the mountpoint of a cgroup hierarchy of the given file
// system type (with the controller among its options, for v1).
func cgroupMount(fstype, controller string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		fields, types := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(types) < 3 || types[0] != fstype {
			continue
		}
		if controller == "" || slices.Contains(strings.Split(types[2], ","), controller) {
			return fields[4]
		}
	}
	return ""
}

// ownCgroup is this process's path in the v1 hierarchy of the controller.
func ownCgroup(t *testing.T, controller string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && slices.Contains(strings.Split(parts[1], ","), controller) {
			return parts[2]
		}
	}
	t.Fatalf("this process is in no %s cgroup (/proc/self/cgroup: %q)", controller, b)
	return ""
}

func hasWord(file, w string) bool { return slices.Contains(strings.Fields(readTrim(file)), w) }

func readTrim(file string) string {
	b, _ := os.ReadFile(file)
	return strings.TrimSpace(string(b))
}

// keyedValue reads "key value" lines (memory.events, memory.oom_control,
// /proc/PID/status, smaps_rollup); a trailing unit is ignored.
func keyedValue(file, key string) (int64, bool) {
	f, err := os.Open(file)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && strings.TrimSuffix(fs[0], ":") == key {
			n, err := strconv.ParseInt(fs[1], 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// memFigures describes a process's memory: resident anonymous memory and
// how much of it the kernel may drop (LazyFree), in MiB.
func memFigures(pid int) string {
	anon, _ := keyedValue(fmt.Sprintf("/proc/%d/status", pid), "RssAnon")
	lazy, _ := keyedValue(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "LazyFree")
	return fmt.Sprintf("RssAnon %d MiB, LazyFree %d MiB", anon>>10, lazy>>10)
}

// TestMemoryCgroupHogSurvives: vafs runs in a cgroup whose memory.max
// (memory.limit_in_bytes on v1) is below its --write-cache size, beside a
// memory hog in the same cgroup (a VM's memory). A burst of random 64 KiB
// writes is cached, then the hog faults in its memory. The cache must give
// way: the OOM killer kills nobody, vafs keeps serving (a second burst
// while the hog holds its memory), and everything written reads back
// verified. Before vafs's memory gave way the burst's 384 MiB stayed
// pinned for 5 minutes and the hog's 320 MiB did not fit in 640 MiB: the
// OOM killer took vafs (the largest) and the mount died.
func TestMemoryCgroupHogSurvives(t *testing.T) {
	requireTools(t, "fio")
	const (
		limit   = 640 << 20
		burst   = 384 << 20 // first file, written whole by random 64 KiB writes
		burst2  = 128 << 20 // second file, written while the hog holds its memory
		hogMiB  = 320
		seedOne = "4242"
		seedTwo = "4343"
	)
	cg := newMemCgroup(t, limit)
	data, mnt := newDirs(t)
	m, err := tryStartMountVia(t, cg.wrap(), data, mnt, "--write-cache", "1G")
	if err != nil {
		t.Fatalf("vafs mount in cgroup %s: %v", cg.dir, err)
	}
	pid := m.cmd.Process.Pid
	if !strings.Contains(readTrim(fmt.Sprintf("/proc/%d/cgroup", pid)), filepath.Base(cg.dir)) {
		t.Fatalf("vafs (pid %d) is not in %s: %s", pid, cg.dir, readTrim(fmt.Sprintf("/proc/%d/cgroup", pid)))
	}
	for _, f := range []struct {
		name string
		size int64
	}{{"one.img", burst}, {"two.img", burst2}} {
		// Sized first (as qemu-img create does): the writes are overwrites
		// within the size, which the cache holds.
		fd, err := os.Create(m.Path(f.name))
		if err != nil {
			t.Fatal(err)
		}
		fd.Close()
		if err := os.Truncate(m.Path(f.name), f.size); err != nil {
			t.Fatal(err)
		}
	}
	fio := func(name string, size int64, seed string, verifyOnly bool) {
		t.Helper()
		args := []string{"--name=" + name, "--filename=" + m.Path(name), "--rw=randwrite", "--bs=64k",
			"--size=" + strconv.FormatInt(size, 10), "--ioengine=psync", "--direct=1",
			"--verify=crc32c", "--do_verify=0", "--verify_fatal=1", "--verify_dump=0", "--verify_state_save=0",
			"--randrepeat=1", "--randseed=" + seed}
		if verifyOnly {
			args = append(args, "--verify_only", "--do_verify=1")
		}
		out, err := runCmd(t, 5*time.Minute, "fio", args...)
		if err != nil || fioErr.MatchString(out) || strings.Contains(out, "verify:") {
			t.Fatalf("fio %s (verify only: %v): %v\n%s", name, verifyOnly, err, out)
		}
	}

	fio("one.img", burst, seedOne, false)
	t.Logf("after a %d MiB burst: vafs %s; cgroup uses %d MiB of %d", burst>>20, memFigures(pid), cg.usage()>>20, limit>>20)

	// The hog, in the same cgroup.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	w := cg.wrap()
	hog := exec.Command(w[0], append(w[1:], self)...)
	hog.Env = append(os.Environ(), hogEnv+"="+strconv.Itoa(hogMiB))
	hogIn, err := hog.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	hogOut := &syncBuffer{}
	hog.Stdout, hog.Stderr = hogOut, hogOut
	if err := hog.Start(); err != nil {
		t.Fatal(err)
	}
	hogDone := make(chan error, 1)
	go func() { hogDone <- hog.Wait() }()
	t.Cleanup(func() {
		hog.Process.Kill() // by pid; a no-op once it exited
		hogIn.Close()
	})
	deadline := time.After(60 * time.Second)
	for !strings.Contains(hogOut.String(), "held") {
		select {
		case err := <-hogDone:
			t.Fatalf("the memory hog died before taking its %d MiB: %v (OOM kills in the cgroup: %d); output: %s",
				hogMiB, err, cg.oomKills(t), hogOut.String())
		case <-deadline:
			t.Fatalf("the memory hog did not take its %d MiB within 60 s", hogMiB)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Logf("hog holds %d MiB: vafs %s; cgroup uses %d MiB", hogMiB, memFigures(pid), cg.usage()>>20)
	select {
	case <-m.Done():
		t.Fatalf("vafs died while the hog took its memory (OOM kills in the cgroup: %d)", cg.oomKills(t))
	default:
	}

	// vafs keeps working beside the hog: another burst, then everything
	// reads back.
	fio("two.img", burst2, seedTwo, false)
	fio("one.img", burst, seedOne, true)
	fio("two.img", burst2, seedTwo, true)
	t.Logf("after a second burst and the reads: vafs %s; cgroup uses %d MiB", memFigures(pid), cg.usage()>>20)

	hogIn.Close()
	select {
	case err := <-hogDone:
		if err != nil {
			t.Errorf("the memory hog exited with %v (OOM kills in the cgroup: %d)", err, cg.oomKills(t))
		}
	case <-time.After(30 * time.Second):
		t.Errorf("the memory hog did not exit within 30 s of its stdin closing")
	}
	if n := cg.oomKills(t); n != 0 {
		t.Errorf("the OOM killer killed %d process(es) in the cgroup", n)
	}
	for _, line := range strings.Split(m.Log(), "\n") {
		if strings.Contains(line, "write cache") || strings.Contains(line, "memory pressure") {
			t.Logf("vafs said: %s", line)
		}
	}
	m.Stop() // a clean exit: status 0, the mountpoint gone

	// What was written is durable, not only served from memory.
	m = startMount(t, data, mnt)
	fio("one.img", burst, seedOne, true)
	fio("two.img", burst2, seedTwo, true)
	m.Stop()
}
