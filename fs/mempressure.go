package fs

// Room "commit" (doc.go, "Rooms"; see commit.go): memory pressure makes
// the background flusher write everything out and commit early.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Memory pressure. The write-back cache stands in for the page cache, but
// the kernel cannot write its dirty pages back or drop them: on a host
// whose memory is given to VMs, a cache full of dirty blocks can push a
// guest (or a neighbour in vafs's cgroup) into the OOM killer. So vafs
// watches the kernel's pressure stall information (PSI,
// Documentation/accounting/psi.rst) with triggers polled for POLLPRI:
//   - the host's /proc/pressure/memory, which counts every task's stalls,
//     those in a cgroup's reclaim included;
//   - the memory.pressure of the nearest cgroup v2 ancestor of vafs (itself
//     included) with memory.max or memory.high set: the limit vafs and its
//     neighbours there share.
//
// When a trigger fires, the cache's effective size drops to
// 1/pressureShrink for pressureHold (each event extends it) and the
// background flusher writes out every cached block, commits (so the
// segment pages it wrote are clean, reclaimable page cache) and unmaps
// every slab with nothing in use (wcache.trim). Without PSI (no
// CONFIG_PSI, psi=0, not allowed to write a trigger) nothing special is
// done, and the mount says so once; slabs with nothing in use are still
// MADV_FREE'd (wcache.release).

// psiTriggers are tried in order: a tenth of the time with some task
// waiting on memory, within a 500 ms window (the shortest the kernel takes;
// it needs CAP_SYS_RESOURCE), else within 2 s (without it the window must
// be a multiple of 2 s: EINVAL otherwise). The kernel reports at most one
// event per window while the stall goes on.
var psiTriggers = []string{"some 50000 500000", "some 200000 2000000"}

const (
	// pressureHold is how long after the last event the cache stays small.
	pressureHold = 10 * time.Second
	// pressureLogEvery rate-limits the log line an event writes.
	pressureLogEvery = time.Minute
)

// psiWatch is a set of PSI triggers and the pipe that stops their poll.
type psiWatch struct {
	files []*os.File
	names []string
	stopR int
	stopW int
}

// openPressure writes a trigger into each PSI file it can; it fails when
// none takes one.
func openPressure() (*psiWatch, error) {
	w := &psiWatch{}
	var errs []error
	host := false // a trigger on the host's pressure is set
	for _, name := range pressureFiles() {
		if host && name == rootPressure() {
			continue // the same stalls as /proc/pressure/memory
		}
		fd, err := unix.Open(name, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		var werr error
		var tr string
		for _, tr = range psiTriggers {
			if _, werr = unix.Write(fd, append([]byte(tr), 0)); werr == nil {
				break
			}
			werr = fmt.Errorf("trigger %q: %w", tr, werr)
		}
		if werr != nil {
			unix.Close(fd)
			errs = append(errs, fmt.Errorf("%s: %w", name, werr))
			continue
		}
		w.files = append(w.files, os.NewFile(uintptr(fd), name))
		w.names = append(w.names, name+" "+strconv.Quote(tr))
		host = host || name == "/proc/pressure/memory"
	}
	if len(w.files) == 0 {
		if len(errs) == 0 {
			errs = append(errs, errors.New("no PSI file"))
		}
		return nil, errors.Join(errs...)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		w.closeFiles()
		return nil, err
	}
	w.stopR, w.stopW = p[0], p[1]
	return w, nil
}

func (w *psiWatch) closeFiles() {
	for _, f := range w.files {
		f.Close()
	}
}

// run calls event with the file's name for every trigger event until stop
// is called. A file that reports an error (its cgroup was removed) is no
// longer watched.
func (w *psiWatch) run(event func(name string)) {
	defer func() {
		w.closeFiles()
		unix.Close(w.stopR)
	}()
	live := make([]bool, len(w.files))
	for i := range live {
		live[i] = true
	}
	for {
		fds := []unix.PollFd{{Fd: int32(w.stopR), Events: unix.POLLIN}}
		idx := []int{-1}
		for i, f := range w.files {
			if live[i] {
				fds = append(fds, unix.PollFd{Fd: int32(f.Fd()), Events: unix.POLLPRI})
				idx = append(idx, i)
			}
		}
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		if fds[0].Revents != 0 {
			return // stop: the write end was closed
		}
		for k, pfd := range fds[1:] {
			switch i := idx[k+1]; {
			case pfd.Revents&unix.POLLERR != 0:
				live[i] = false
			case pfd.Revents&unix.POLLPRI != 0:
				event(w.names[i])
			}
		}
	}
}

// stop ends run (it sees the pipe's write end closed).
func (w *psiWatch) stop() { unix.Close(w.stopW) }

// pressureFiles lists the PSI files to watch: the nearest cgroup v2
// ancestor with a memory limit, then the host's: /proc/pressure/memory,
// or else the root cgroup's memory.pressure, which is the same (some
// kernels take no trigger on /proc/pressure without CAP_SYS_RESOURCE).
func pressureFiles() []string {
	var out []string
	if cg := limitedCgroup(); cg != "" {
		out = append(out, filepath.Join(cg, "memory.pressure"))
	}
	out = append(out, "/proc/pressure/memory")
	if r := rootPressure(); r != "" {
		out = append(out, r)
	}
	return out
}

// rootPressure is the root cgroup's memory.pressure, or "".
func rootPressure() string {
	if mnt := cgroup2Mount(); mnt != "" {
		return filepath.Join(mnt, "memory.pressure")
	}
	return ""
}

// limitedCgroup returns the directory of the nearest cgroup v2 ancestor of
// this process, itself included, whose memory.max or memory.high is set,
// or "" (no cgroup v2 hierarchy, no limit, the root).
func limitedCgroup() string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	var rel string
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			rel, found = p, true
		}
	}
	mnt := cgroup2Mount()
	if !found || mnt == "" {
		return ""
	}
	root := filepath.Clean(mnt)
	for d := filepath.Join(root, rel); d != root && strings.HasPrefix(d, root+"/"); d = filepath.Dir(d) {
		for _, knob := range []string{"memory.max", "memory.high"} {
			v, err := os.ReadFile(filepath.Join(d, knob))
			if err == nil && strings.TrimSpace(string(v)) != "max" {
				return d
			}
		}
	}
	return ""
}

// cgroup2Mount is where the cgroup v2 hierarchy is mounted, or "".
func cgroup2Mount() string {
	// 36 35 0:30 / /sys/fs/cgroup rw,... shared:9 - cgroup2 cgroup2 rw
	return findMount(func(types []string) bool { return types[0] == "cgroup2" })
}

// watchPressure runs beside the background flusher until stop is closed:
// PSI events lower the cache's size and ask the flusher to relieve the
// pressure. Without PSI it says so once and returns.
func (f *FS) watchPressure(stop <-chan struct{}) {
	w, err := openPressure()
	if err != nil {
		f.lg.Printf("memory pressure is not watched (%v): the write cache does not shrink under pressure; slabs with nothing cached are still MADV_FREE'd", err)
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(f.pressure)
	}()
	<-stop
	w.stop()
	<-done
}

// pressure records a PSI event from the named file.
func (f *FS) pressure(name string) {
	f.wc.pressureUntil.Store(time.Now().Add(pressureHold).UnixNano())
	f.pressureFrom.Store(&name)
	f.wc.pressed.Store(true)
	f.wc.wake()
}

// relieve runs in the background flusher after a PSI event: every cached
// block goes to the log and is committed (the commit syncs the segments,
// so the page cache they took is clean and reclaimable), and the slabs,
// now unused, are unmapped.
func (f *FS) relieve() {
	cached := f.wc.used.Load()
	var err error
	if cached > 0 || f.trees.Dirty() > 0 {
		err = f.backgroundCommit()
	}
	gone := f.wc.trim()
	f.pressureEvents.Add(1)
	now := time.Now()
	if last := f.pressureLogged.Load(); last == 0 || now.Sub(time.Unix(0, last)) >= pressureLogEvery {
		f.pressureLogged.Store(now.UnixNano())
		from := "PSI"
		if p := f.pressureFrom.Load(); p != nil {
			from = *p
		}
		msg := fmt.Sprintf("memory pressure (%s, event %d): wrote out and committed %d MiB cached, unmapped %d MiB; the write cache holds at most %d MiB until %v without pressure",
			from, f.pressureEvents.Load(), cached*BlockSize>>20, gone*BlockSize>>20, f.wc.size()*BlockSize>>20, pressureHold)
		if err != nil {
			msg += fmt.Sprintf(" (commit: %v)", err)
		}
		f.lg.Print(msg)
	} else if err != nil {
		f.lg.Printf("memory pressure: commit: %v", err)
	}
}

// cgroupShare: the write-back cache takes at most this fraction of the
// memory limit of vafs's cgroup. Its dirty pages cannot be reclaimed, and
// under memory.max a cgroup whose reclaimable memory runs out goes to the
// OOM killer within milliseconds, before a PSI event could be acted on;
// the rest of the limit is left to the mount's heap, the page cache its
// segment writes take, and whatever shares the cgroup.
const cgroupShare = 4

// CgroupMemoryLimit is the memory limit that applies to this process: the
// least memory.max or memory.high of its cgroup v2 and the ancestors, or
// the cgroup v1 memory controller's hierarchical_memory_limit, with the
// directory it was read from; 0 when there is none.
func CgroupMemoryLimit() (int64, string) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, ""
	}
	var limit int64
	var where string
	take := func(v int64, dir string) {
		if v > 0 && v < 1<<60 && (limit == 0 || v < limit) {
			limit, where = v, dir
		}
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			mnt := cgroup2Mount()
			if mnt == "" {
				continue
			}
			root := filepath.Clean(mnt)
			for d := filepath.Join(root, parts[2]); d != root && strings.HasPrefix(d, root+"/"); d = filepath.Dir(d) {
				for _, knob := range []string{"memory.max", "memory.high"} {
					if v, err := readInt(filepath.Join(d, knob)); err == nil {
						take(v, d)
					}
				}
			}
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			mnt := cgroup1Mount("memory")
			if mnt == "" {
				continue
			}
			d := filepath.Join(mnt, parts[2])
			st, err := os.ReadFile(filepath.Join(d, "memory.stat"))
			if err != nil {
				continue
			}
			for _, l := range strings.Split(string(st), "\n") {
				if v, ok := strings.CutPrefix(l, "hierarchical_memory_limit "); ok {
					if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
						take(n, d)
					}
				}
			}
		}
	}
	return limit, where
}

func readInt(name string) (int64, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// cgroup1Mount is where the cgroup v1 hierarchy with the given controller
// is mounted, or "".
func cgroup1Mount(controller string) string {
	return findMount(func(types []string) bool {
		return len(types) >= 3 && types[0] == "cgroup" && slices.Contains(strings.Split(types[2], ","), controller)
	})
}

// findMount returns the mount point of the first line of
// /proc/self/mountinfo whose fields after " - " (type, source, options)
// match says yes to, or "".
func findMount(match func(types []string) bool) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, types := strings.Fields(pre), strings.Fields(post)
		if ok && len(fields) >= 5 && len(types) >= 1 && match(types) {
			return fields[4]
		}
	}
	return ""
}
