package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	// vafsBin is the binary under test; empty when skipReason is set.
	vafsBin string
	// skipReason is why every test skips (not root, no /dev/fuse); empty when they run.
	skipReason string
	// testRoot holds every temp dir of the run (TMPDIR points here), so TestMain can
	// find mounts the tests left behind.
	testRoot string
)

const (
	mountReadyTimeout = 20 * time.Second
	mountStopTimeout  = 60 * time.Second
	// mountWatchdog bounds a mount's life: when it fires the mount is SIGKILLed,
	// which turns any file-system call hung in the test process into ENOTCONN
	// instead of hanging the run until `go test -timeout`.
	mountWatchdog = 5 * time.Minute
)

func TestMain(m *testing.M) {
	if size := os.Getenv(hogEnv); size != "" {
		os.Exit(runHog(size)) // the test binary as a memory hog (memory_test.go)
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	switch {
	case os.Geteuid() != 0:
		skipReason = "integration tests need root (FUSE mounts, tmpfs, loop devices)"
	default:
		if _, err := os.Stat("/dev/fuse"); err != nil {
			skipReason = "integration tests need /dev/fuse: " + err.Error()
		}
	}
	root, err := os.MkdirTemp("", "vafs-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	// Resolve symlinks so paths match /proc/mounts exactly.
	if r, err := filepath.EvalSymlinks(root); err == nil {
		root = r
	}
	testRoot = root
	// t.TempDir uses os.TempDir, i.e. $TMPDIR: every per-test dir lands under root.
	os.Setenv("TMPDIR", root)

	if skipReason == "" {
		vafsBin = os.Getenv("VAFS_BIN")
		if vafsBin == "" {
			bin, err := buildVafs(root)
			if err != nil {
				fmt.Fprintln(os.Stderr, "integration: building vafs:", err)
				os.RemoveAll(root)
				return 1
			}
			vafsBin = bin
		} else if abs, err := filepath.Abs(vafsBin); err == nil {
			vafsBin = abs
		}
	}

	code := m.Run()

	// A test must leave no mount behind: fail the run if one did, then clean up
	// anyway so the host stays usable.
	left := mountsUnder(root)
	if len(left) > 0 {
		fmt.Fprintf(os.Stderr, "integration: FAIL: mounts left behind under %s:\n", root)
		for _, mp := range left {
			fmt.Fprintln(os.Stderr, "   ", mp)
		}
		code = 1
	}
	for _, dev := range loopDevicesUnder(root) {
		fmt.Fprintln(os.Stderr, "integration: FAIL: loop device left behind:", dev)
		exec.Command("losetup", "-d", dev).Run()
		code = 1
	}
	// Deepest first, so a mount inside a mount comes off before its parent.
	for i := len(left) - 1; i >= 0; i-- {
		syscall.Unmount(left[i], syscall.MNT_DETACH)
	}
	if len(mountsUnder(root)) == 0 {
		os.RemoveAll(root)
	} else {
		fmt.Fprintln(os.Stderr, "integration: not removing", root, "because mounts remain under it")
	}
	return code
}

// buildVafs builds ./cmd/vafs and the engine it runs, ./cmd/vafsd, of the
// module that contains this package, into one directory (vafs looks for
// vafsd next to itself), as `just build` does.
func buildVafs(root string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	dir := filepath.Join(root, "bin")
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "urfave_cli_no_docs", "-o", dir+"/", "./cmd/vafs", "./cmd/vafsd")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/vafs ./cmd/vafsd: %w\n%s", err, out)
	}
	return filepath.Join(dir, "vafs"), nil
}

// procMounts returns the mountpoints in /proc/mounts, unescaped, in mount order.
func procMounts() []string {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return nil
	}
	var mps []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		mps = append(mps, unescapeMount(f[1]))
	}
	return mps
}

// mountEntry returns the /proc/mounts fields (device, mountpoint, type, options)
// of the last mount at mp, or nil.
func mountEntry(mp string) []string {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return nil
	}
	var last []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && unescapeMount(f[1]) == mp {
			last = f
		}
	}
	return last
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

func isMounted(mp string) bool { return mountEntry(mp) != nil }

func mountsUnder(root string) []string {
	var out []string
	for _, mp := range procMounts() {
		if mp == root || strings.HasPrefix(mp, root+"/") {
			out = append(out, mp)
		}
	}
	return out
}

// loopDevicesUnder lists loop devices whose backing file is under root.
func loopDevicesUnder(root string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "losetup", "-a").Output()
	if err != nil {
		return nil
	}
	var devs []string
	for _, line := range strings.Split(string(out), "\n") {
		// /dev/loop0: [0042]:123 (/path/to/file)
		dev, rest, ok := strings.Cut(line, ":")
		if ok && strings.Contains(rest, "("+root+"/") {
			devs = append(devs, dev)
		}
	}
	return devs
}

// requireRoot skips the test, saying why, unless it can mount FUSE file systems
// (root and /dev/fuse). This skip stays a skip everywhere: it is the machine, not
// a missing install, and the skip message names what is missing.
func requireRoot(t testing.TB) {
	t.Helper()
	if skipReason != "" {
		t.Skip("skipping: " + skipReason)
	}
}

// strictEnv says why a missing client program fails the test instead of
// skipping it, or returns "" when it may skip. CI sets $CI; `just test` (and so
// `just ci` and .ci/run) sets $VAFS_BIN, after `just setup` installed every
// client. In both a missing program means the setup is broken, and a skip there
// would let the suite pass without running the test.
func strictEnv() string {
	if v := os.Getenv("CI"); v != "" && v != "0" && !strings.EqualFold(v, "false") {
		return "CI=" + v
	}
	if os.Getenv("VAFS_BIN") != "" {
		return "VAFS_BIN is set"
	}
	return ""
}

// skipOrFail skips the test because something the machine should provide is
// missing (the message says what), or fails it when strictEnv says the run must
// not skip: a suite that skips a test in CI passes without running it.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if why := strictEnv(); why != "" {
		t.Fatalf("%s; a failure, not a skip, because %s", msg, why)
	}
	t.Skipf("skipping: %s (with CI or VAFS_BIN set this is a failure)", msg)
}

// requireTools skips the test when one of the client programs is missing, or
// fails it in CI (see strictEnv).
func requireTools(t testing.TB, names ...string) {
	t.Helper()
	requireRoot(t)
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			skipOrFail(t, "client program %q is not installed (%v); `just setup` installs it", n, err)
		}
	}
}

// syncBuffer collects a child's output for printing on failure.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Mount is one foreground `vafs mount` child process.
type Mount struct {
	t    testing.TB
	Data string // data dir
	Dir  string // mountpoint
	cmd  *exec.Cmd
	log  *syncBuffer

	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done
	over    bool          // Stop or Kill already called
	dog     *time.Timer
}

// newDirs returns a fresh data dir and mountpoint for a test.
func newDirs(t testing.TB) (data, mnt string) {
	return t.TempDir(), t.TempDir()
}

// startMount starts `vafs mount --data data mnt` in the foreground and returns once
// it printed its `mounted` line and the mountpoint is in /proc/mounts. The mount is
// stopped (SIGTERM) by t.Cleanup unless the test stopped or killed it, and the
// cleanup checks that the mountpoint is gone from /proc/mounts.
func startMount(t testing.TB, data, mnt string, extra ...string) *Mount {
	t.Helper()
	m, err := tryStartMount(t, data, mnt, extra...)
	if err != nil {
		t.Fatalf("vafs mount --data %s %s: %v", data, mnt, err)
	}
	return m
}

func tryStartMount(t testing.TB, data, mnt string, extra ...string) (*Mount, error) {
	t.Helper()
	return tryStartMountVia(t, nil, data, mnt, extra...)
}

// tryStartMountVia is tryStartMount with the command run through wrap (a
// program and its arguments that exec the rest, e.g. into a cgroup); the
// wrapper must exec vafs in its own process, so that signals reach it.
func tryStartMountVia(t testing.TB, wrap []string, data, mnt string, extra ...string) (*Mount, error) {
	t.Helper()
	args := append([]string{"mount", "--data", data}, extra...)
	args = append(args, extraMountFlags()...)
	args = append(args, mnt)
	argv := append(append(append([]string{}, wrap...), vafsBin), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	// If the test binary dies (go test -timeout), SIGTERM lets vafs unmount itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = pw
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, err
	}
	pw.Close()
	m := &Mount{t: t, Data: data, Dir: mnt, cmd: cmd, log: &syncBuffer{}, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		once := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(m.log, line)
			if !once && strings.Contains(line, "mounted") && !strings.Contains(line, "unmounted") {
				once = true
				close(ready)
			}
		}
	}()
	go func() {
		m.waitErr = cmd.Wait()
		close(m.done)
	}()
	m.dog = time.AfterFunc(mountWatchdog, func() {
		fmt.Fprintf(m.log, "integration: WATCHDOG: mount alive for %v, sending SIGKILL\n", mountWatchdog)
		cmd.Process.Kill()
	})
	t.Cleanup(func() {
		if !m.over {
			m.stop(syscall.SIGTERM, true)
		}
		if t.Failed() {
			out := m.log.String()
			if len(out) > 16*1024 {
				out = "...\n" + out[len(out)-16*1024:]
			}
			t.Logf("output of vafs %s:\n%s", strings.Join(args, " "), out)
		}
	})

	select {
	case <-ready:
	case <-m.done:
		m.over = true
		m.dog.Stop()
		return nil, fmt.Errorf("exited before mounting (%v); output:\n%s", m.waitErr, m.log.String())
	case <-time.After(mountReadyTimeout):
		cmd.Process.Kill()
		<-m.done
		m.over = true
		m.dog.Stop()
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		return nil, fmt.Errorf("no `mounted` line within %v; output:\n%s", mountReadyTimeout, m.log.String())
	}
	if !isMounted(mnt) {
		return m, fmt.Errorf("printed `mounted` but %s is not in /proc/mounts", mnt)
	}
	return m, nil
}

// extraMountFlags are added to every foreground mount from $VAFS_MOUNT_FLAGS
// (space-separated), e.g. "--writeback-cache" to run the suite in that mode.
func extraMountFlags() []string { return strings.Fields(os.Getenv("VAFS_MOUNT_FLAGS")) }

// Path joins elements onto the mountpoint.
func (m *Mount) Path(elem ...string) string {
	return filepath.Join(append([]string{m.Dir}, elem...)...)
}

// Log returns what the mount printed so far.
func (m *Mount) Log() string { return m.log.String() }

// Stop sends SIGTERM and asserts a clean exit: status 0 and the mountpoint gone.
func (m *Mount) Stop() {
	m.t.Helper()
	m.stop(syscall.SIGTERM, true)
}

// Interrupt is Stop with SIGINT.
func (m *Mount) Interrupt() {
	m.t.Helper()
	m.stop(syscall.SIGINT, true)
}

func (m *Mount) stop(sig syscall.Signal, wantClean bool) {
	m.t.Helper()
	if m.over {
		return
	}
	m.over = true
	defer m.dog.Stop()
	m.cmd.Process.Signal(sig)
	select {
	case <-m.done:
		if wantClean && m.waitErr != nil {
			m.t.Errorf("vafs mount %s: exit after %v: %v (want status 0)", m.Dir, sig, m.waitErr)
		}
	case <-time.After(mountStopTimeout):
		m.t.Errorf("vafs mount %s: still running %v after %v; killing it", m.Dir, mountStopTimeout, sig)
		m.cmd.Process.Kill()
		<-m.done
	}
	m.assertGone()
}

// Kill SIGKILLs the mount process and waits for it; the dead FUSE mount stays in
// place (ENOTCONN) until DetachDead or the next `vafs mount` on the same dir.
func (m *Mount) Kill() {
	m.t.Helper()
	if m.over {
		return
	}
	m.over = true
	defer m.dog.Stop()
	m.cmd.Process.Kill()
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		abortFuse(m.t, m.Dir)
		m.t.Fatalf("vafs mount %s did not die within 30s of SIGKILL (connection aborted)", m.Dir)
	}
	m.t.Cleanup(func() {
		// In case the test failed before cleaning up the dead mount.
		if isMounted(m.Dir) {
			syscall.Unmount(m.Dir, syscall.MNT_DETACH)
		}
	})
}

// Done is closed when the mount process has exited.
func (m *Mount) Done() <-chan struct{} { return m.done }

// WaitExit waits for the mount process to exit by itself and returns its status.
func (m *Mount) WaitExit(d time.Duration) (error, bool) {
	select {
	case <-m.done:
		m.over = true
		m.dog.Stop()
		return m.waitErr, true
	case <-time.After(d):
		return nil, false
	}
}

// assertGone fails the test if the mountpoint is still mounted, then detaches it.
func (m *Mount) assertGone() {
	m.t.Helper()
	if isMounted(m.Dir) {
		m.t.Errorf("%s is still in /proc/mounts after the mount process exited; detaching it", m.Dir)
		detach(m.t, m.Dir)
	}
}

// detachDead lazily unmounts a dead FUSE mount, as an operator would with umount -l.
func detachDead(t testing.TB, mp string) {
	t.Helper()
	if out, err := runCmd(t, 30*time.Second, "umount", "-l", mp); err != nil {
		t.Fatalf("umount -l %s: %v\n%s", mp, err, out)
	}
	if isMounted(mp) {
		t.Fatalf("%s still mounted after umount -l", mp)
	}
}

func detach(t testing.TB, mp string) {
	if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
		t.Logf("umount -l %s: %v", mp, err)
	}
}

// runCmd runs a program with a timeout and returns its combined output.
func runCmd(t testing.TB, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	return runCmdIn(t, "", timeout, name, args...)
}

func runCmdIn(t testing.TB, dir string, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v (%w)", timeout, err)
	}
	return string(out), err
}

// mustRun runs a program and fails the test, showing the command and its output,
// unless it exits 0.
func mustRun(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := runCmd(t, timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// vafs runs the binary under test (not mount in the foreground).
func vafs(t testing.TB, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	return runCmd(t, timeout, vafsBin, args...)
}

// requireFsck fails the test unless the binary under test has `vafs fsck`
// documenting --data and every flag named (e.g. "--repair"): its help must exit 0
// and list them. A CLI without the subcommand prints the top-level help instead,
// which lists no --data. Never a skip: fsck is part of vafs, not of the machine.
func requireFsck(t testing.TB, flags ...string) {
	t.Helper()
	out, err := vafs(t, 30*time.Second, "fsck", "--help")
	if err != nil {
		t.Fatalf("%s fsck --help: %v: this test needs `vafs fsck`; output:\n%s", vafsBin, err, out)
	}
	for _, f := range append([]string{"--data"}, flags...) {
		if !strings.Contains(out, f) {
			t.Fatalf("%s fsck --help does not list %s: this test needs `vafs fsck %s`; output:\n%s", vafsBin, f, f, out)
		}
	}
}

// checkFsck runs `vafs fsck --data dir` on a stopped data dir and asserts exit 0
// and "clean"; the test fails if the binary has no fsck.
func checkFsck(t testing.TB, data string) {
	t.Helper()
	requireFsck(t)
	out, err := vafs(t, 2*time.Minute, "fsck", "--data", data)
	if err != nil || !strings.Contains(out, "clean") {
		t.Errorf("vafs fsck --data %s: err=%v, want exit 0 and \"clean\"; output:\n%s", data, err, out)
	}
}

// killDuringStart starts `vafs mount` and SIGKILLs it after d, wherever it is:
// opening the data dir, recovering, or already serving. A leftover mount is
// detached. It returns what the process printed.
func killDuringStart(t testing.TB, data, mnt string, d time.Duration) string {
	t.Helper()
	var out syncBuffer
	cmd := exec.Command(vafsBin, append(append([]string{"mount", "--data", data}, extraMountFlags()...), mnt)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start vafs mount: %v", err)
	}
	time.Sleep(d)
	cmd.Process.Kill()
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(30 * time.Second):
		// A process killed while waiting on a request to its own mount can
		// never finish dying: abort the connection so the run goes on.
		abortFuse(t, mnt)
		<-waited
		t.Fatalf("vafs mount %s did not die within 30s of SIGKILL (stuck on a request to its own mount; connection aborted)\n%s", mnt, out.String())
	}
	if isMounted(mnt) {
		detachDead(t, mnt)
	}
	return out.String()
}

// abortFuse aborts the FUSE connection of mount point mp through fusectl
// (mounting it if needed), failing every request in flight, as an operator
// would with `echo 1 > /sys/fs/fuse/connections/N/abort`.
func abortFuse(t testing.TB, mp string) {
	t.Helper()
	e := mountInfoEntry(mp)
	if e == "" {
		t.Logf("abort %s: not in /proc/self/mountinfo", mp)
		return
	}
	minor := e[strings.IndexByte(e, ':')+1:]
	const ctl = "/sys/fs/fuse/connections"
	if _, err := os.Stat(ctl + "/" + minor); err != nil {
		syscall.Mount("fusectl", ctl, "fusectl", 0, "")
	}
	if err := os.WriteFile(ctl+"/"+minor+"/abort", []byte("1"), 0); err != nil {
		t.Logf("abort %s (connection %s): %v", mp, minor, err)
	}
}

// mountInfoEntry returns the major:minor of mount point mp, or "".
func mountInfoEntry(mp string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMount(f[4]) == mp {
			return f[2]
		}
	}
	return ""
}
