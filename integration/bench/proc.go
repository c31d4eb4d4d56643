package main

// Processes, mounts and their teardown. Children run in their own process
// group so a Ctrl-C on the terminal reaches only this command, which then
// stops them in order: stop the client, stop the daemon, check the mount
// is gone, unmount it by force if not.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// teardown is a LIFO stack of cleanups that runs exactly once.
type teardown struct {
	mu   sync.Mutex
	fns  []namedFn
	done bool
}

type namedFn struct {
	name string
	fn   func() error
}

func (td *teardown) add(name string, fn func() error) {
	td.mu.Lock()
	defer td.mu.Unlock()
	td.fns = append(td.fns, namedFn{name, fn})
}

// run runs every cleanup, newest first, even when some fail, and returns
// the first error.
func (td *teardown) run() error {
	td.mu.Lock()
	defer td.mu.Unlock()
	if td.done {
		return nil
	}
	td.done = true
	var first error
	for i := len(td.fns) - 1; i >= 0; i-- {
		f := td.fns[i]
		if err := f.fn(); err != nil {
			logf("cleanup %s: %v", f.name, err)
			if first == nil {
				first = fmt.Errorf("cleanup %s: %w", f.name, err)
			}
		}
	}
	return first
}

func lookPath(bin string) (string, error) { return exec.LookPath(bin) }

// command builds a child in its own process group. Cancelling ctx sends
// SIGTERM to the whole group, and SIGKILL to the leader 10 s later: fio
// forks a process per job and stops them itself on SIGTERM, and a job left
// holding a file open on a FUSE mount would keep the mount busy.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// runCmd runs a short command and returns its combined output; the error
// carries the tail of that output.
func runCmd(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, tail(string(out), 800))
	}
	return string(out), nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// daemon is a long-running child we started and must stop.
type daemon struct {
	name string
	cmd  *exec.Cmd
	exit chan struct{} // closed when the process has been reaped
	err  error         // Wait's result, valid after exit is closed
}

// startDaemon starts a child that must outlive ctx: it is stopped by stop,
// not by cancellation, so that it can unmount in order.
func startDaemon(name, logPath, bin string, args ...string) (*daemon, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, exit: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		logFile.Close()
		close(d.exit)
	}()
	return d, nil
}

func (d *daemon) exited() bool {
	select {
	case <-d.exit:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the daemon's process group, waits, then SIGKILLs.
func (d *daemon) stop(grace time.Duration) error {
	if d.exited() {
		return nil
	}
	pgid := d.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-d.exit:
		return nil
	case <-time.After(grace):
	}
	logf("%s did not exit %s after SIGTERM; killing it", d.name, grace)
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-d.exit:
		return fmt.Errorf("%s had to be killed", d.name)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) survives SIGKILL (stuck in the kernel?)", d.name, pgid)
	}
}

// isMounted reports whether path is a mount point in this namespace.
func isMounted(path string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMount(fields[4]) == path {
			return true
		}
	}
	return false
}

// unescapeMount undoes the octal escapes (\040 for space) of /proc mount tables.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// waitMounted polls until path is a mount point, the daemon (if any) dies,
// or the timeout passes.
func waitMounted(ctx context.Context, path string, d *daemon, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if isMounted(path) {
			return nil
		}
		if d != nil && d.exited() {
			return fmt.Errorf("%s exited before mounting %s: %v", d.name, path, d.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not mounted after %s", path, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ensureUnmounted is the last line of defence: whatever happened to the
// daemon, leave no FUSE mount behind.
func ensureUnmounted(path string) error {
	if !isMounted(path) {
		return nil
	}
	logf("%s is still mounted; unmounting it", path)
	if _, err := runCmd(context.Background(), 30*time.Second, "umount", path); err == nil && !isMounted(path) {
		return nil
	}
	if _, err := runCmd(context.Background(), 30*time.Second, "umount", "-l", path); err != nil {
		return err
	}
	if isMounted(path) {
		return fmt.Errorf("%s is still mounted", path)
	}
	return nil
}

// findByArg lists processes that run exe with arg among their arguments:
// the daemon `vafs mount --background` leaves behind, which we did not fork
// ourselves and so know only by its command line. arg is a path under our
// own work directory, so a match can only be ours.
func findByArg(exe, arg string) []int {
	want := map[string]bool{exe: true}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		want[resolved] = true
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
	for _, dir := range dirs {
		raw, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if !contains(argv[1:], arg) {
			continue
		}
		link, _ := os.Readlink(filepath.Join(dir, "exe"))
		if !want[argv[0]] && !want[strings.TrimSuffix(link, " (deleted)")] {
			continue
		}
		if pid, _ := strconv.Atoi(filepath.Base(dir)); pid != 0 && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// reapByArg waits up to grace for the processes findByArg finds to exit by
// themselves, then stops them by pid: SIGTERM, and SIGKILL 10 s later.
func reapByArg(exe, arg string, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	pids := findByArg(exe, arg)
	for len(pids) != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		pids = findByArg(exe, arg)
	}
	if len(pids) == 0 {
		return nil
	}
	for _, pid := range pids {
		logf("stopping leftover %s (pid %d)", exe, pid)
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline = time.Now().Add(10 * time.Second)
	for len(findByArg(exe, arg)) != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	for _, pid := range findByArg(exe, arg) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return fmt.Errorf("%s serving %s did not exit after unmount and had to be stopped", exe, arg)
}
