package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
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

// Helpers for the clone / snapshot / describe / df / compact tests. They drive
// the CLI exactly as docs/cli-snapshots.md describes it: exit 0 on success, 1
// when the operation failed, 2 for a usage error; JSON on stdout with --json.

const cliTimeout = 2 * time.Minute

// cliResult is one finished `vafs ...` invocation.
type cliResult struct {
	args           []string
	stdout, stderr string
	code           int // exit status; -1 if it did not exit (timeout, signal, not started)
	err            error
}

func (r cliResult) String() string {
	return fmt.Sprintf("vafs %s: exit %d (%v)\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.err, r.stdout, r.stderr)
}

// Output is stdout and stderr together, for message checks.
func (r cliResult) Output() string { return r.stdout + r.stderr }

// runVafsIn runs the binary under test in dir ("" = the test's cwd) and keeps
// stdout and stderr apart so that JSON on stdout parses whatever is logged.
func runVafsIn(t testing.TB, dir string, timeout time.Duration, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, vafsBin, args...)
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r := cliResult{args: args, stdout: so.String(), stderr: se.String(), code: -1, err: err}
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.code = 0
	case ctx.Err() != nil:
		r.err = fmt.Errorf("timed out after %v (%w)", timeout, err)
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	}
	return r
}

func runVafs(t testing.TB, args ...string) cliResult {
	t.Helper()
	return runVafsIn(t, "", cliTimeout, args...)
}

// mustVafs runs a CLI command that must succeed and returns its stdout.
func mustVafs(t testing.TB, args ...string) string {
	t.Helper()
	r := runVafs(t, args...)
	if r.code != 0 {
		t.Fatalf("want exit 0: %v", r)
	}
	return r.stdout
}

// expectVafsFail runs a CLI command that must exit with code and print a
// message containing every one of want (case-insensitive).
func expectVafsFail(t testing.TB, code int, want []string, args ...string) cliResult {
	t.Helper()
	r := runVafs(t, args...)
	if r.code != code {
		t.Errorf("want exit %d: %v", code, r)
		return r
	}
	out := strings.ToLower(r.Output())
	for _, w := range want {
		if !strings.Contains(out, strings.ToLower(w)) {
			t.Errorf("want a message containing %q: %v", w, r)
		}
	}
	return r
}

// vafsCommands lists the subcommands of the binary under test, from the
// COMMANDS section of `vafs --help`.
func vafsCommands(t testing.TB) map[string]bool {
	t.Helper()
	r := runVafsIn(t, "", 30*time.Second, "--help")
	cmds := map[string]bool{}
	in := false
	sc := bufio.NewScanner(strings.NewReader(r.stdout + r.stderr))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "COMMANDS:") {
			in = true
			continue
		}
		if in {
			if strings.TrimSpace(line) == "" || !strings.HasPrefix(line, " ") {
				if strings.TrimSpace(line) != "" {
					in = false
				}
				continue
			}
			// "   help, h  Shows ...": the names end at the first field without a comma.
			for _, f := range strings.Fields(line) {
				name := strings.TrimSuffix(f, ",")
				if name != "" {
					cmds[name] = true
				}
				if !strings.HasSuffix(f, ",") {
					break
				}
			}
		}
	}
	return cmds
}

// requireCommands fails the test unless the binary under test has every named
// subcommand: a missing one is a missing feature of vafs, never a reason to skip.
func requireCommands(t testing.TB, names ...string) {
	t.Helper()
	requireRoot(t)
	have := vafsCommands(t)
	for _, n := range names {
		if !have[n] {
			got := keys(have)
			slices.Sort(got)
			t.Fatalf("%s has no %q subcommand, which this test needs (`vafs --help` lists: %v)", vafsBin, n, got)
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// remount stops the mount cleanly (SIGTERM: flush, unmount) and mounts the same
// data dir on the same mountpoint again.
func remount(t testing.TB, m *Mount) *Mount {
	t.Helper()
	failed := t.Failed()
	m.Stop()
	if t.Failed() && !failed { // the stop itself failed: the mountpoint may be unusable
		t.FailNow()
	}
	return startMount(t, m.Data, m.Dir)
}

// umountCLI unmounts with `vafs umount`, which returns once the mount process
// has flushed and exited, and checks that the mount process exited cleanly.
func umountCLI(t testing.TB, m *Mount) {
	t.Helper()
	r := runVafs(t, "umount", m.Dir)
	if r.code != 0 {
		t.Fatalf("want exit 0: %v", r)
	}
	err, ok := m.WaitExit(mountStopTimeout)
	if !ok {
		t.Fatalf("vafs umount %s returned but the mount process is still running after %v", m.Dir, mountStopTimeout)
	}
	if err != nil {
		t.Errorf("mount process of %s after vafs umount: %v (want status 0)", m.Dir, err)
	}
	m.assertGone()
}

// duApparent is `du -sb path`: the apparent bytes of the files under path.
func duApparent(t testing.TB, path string) int64 {
	t.Helper()
	out := mustRun(t, 2*time.Minute, "du", "-sb", path)
	f := strings.Fields(out)
	if len(f) < 1 {
		t.Fatalf("du -sb %s: unexpected output %q", path, out)
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		t.Fatalf("du -sb %s: %q: %v", path, out, err)
	}
	return n
}

// freeBytes is the space available (to non-root users) on the file system holding path.
func freeBytes(t testing.TB, path string) uint64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatalf("statfs %s: %v", path, err)
	}
	return st.Bavail * uint64(st.Bsize)
}

// dfUsage is `vafs df --json`.
type dfUsage struct {
	Files           int    `json:"files"`
	Snapshots       int    `json:"snapshots"`
	Logical         uint64 `json:"logical"`
	SnapshotLogical uint64 `json:"snapshot_logical"`
	Physical        uint64 `json:"physical"`
	Saved           uint64 `json:"saved"`
	Stored          uint64 `json:"stored"`
	Metadata        uint64 `json:"metadata"`
	Segments        int    `json:"segments"`
}

var dfKeys = []string{"files", "snapshots", "logical", "snapshot_logical", "physical", "saved", "stored", "metadata", "segments"}

func vafsDf(t testing.TB, path string) dfUsage {
	t.Helper()
	out := mustVafs(t, "df", path, "--json")
	var u dfUsage
	decodeJSONKeys(t, "vafs df --json", out, &u, dfKeys)
	return u
}

// snapInfo is one snapshot in `snapshot list --json` and `describe --json`.
type snapInfo struct {
	Name      string `json:"name"`
	ID        uint64 `json:"id"`
	Created   string `json:"created"`
	Size      uint64 `json:"size"`
	Allocated uint64 `json:"allocated"`
}

var snapKeys = []string{"name", "id", "created", "size", "allocated"}

func snapList(t testing.TB, file string) []snapInfo {
	t.Helper()
	out := mustVafs(t, "snapshot", "list", file, "--json")
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &raw); err != nil {
		t.Fatalf("vafs snapshot list %s --json: not a JSON array: %v\n%s", file, err, out)
	}
	snaps := make([]snapInfo, len(raw))
	for i, r := range raw {
		decodeJSONKeys(t, "vafs snapshot list --json entry", string(r), &snaps[i], snapKeys)
	}
	return snaps
}

func snapNames(s []snapInfo) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = x.Name
	}
	return out
}

// description is `vafs describe --json`.
type description struct {
	Path         string     `json:"path"`
	Ino          uint64     `json:"ino"`
	Size         uint64     `json:"size"`
	Allocated    uint64     `json:"allocated"`
	Unique       uint64     `json:"unique"`
	Shared       uint64     `json:"shared"`
	SnapshotOnly uint64     `json:"snapshot_only"`
	Origin       string     `json:"origin"`
	Snapshots    []snapInfo `json:"snapshots"`
}

var describeKeys = []string{"path", "ino", "size", "allocated", "unique", "shared", "snapshot_only", "origin", "snapshots"}

func vafsDescribe(t testing.TB, file string) description {
	t.Helper()
	out := mustVafs(t, "describe", file, "--json")
	var d description
	decodeJSONKeys(t, "vafs describe --json", out, &d, describeKeys)
	return d
}

// decodeJSONKeys decodes s into v and fails unless every key of the contract is present.
func decodeJSONKeys(t testing.TB, what, s string, v any, want []string) {
	t.Helper()
	s = strings.TrimSpace(s)
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("%s: not a JSON object: %v\n%s", what, err, s)
	}
	for _, k := range want {
		if _, ok := m[k]; !ok {
			t.Errorf("%s: key %q missing in %s", what, k, s)
		}
	}
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, s)
	}
}

// snapPath is MOUNT/.snapshots/<rel>/<name>.
func snapPath(m *Mount, rel, name string) string {
	return filepath.Join(m.Dir, ".snapshots", rel, name)
}

// cmpFiles runs cmp(1) on two files and fails the test if they differ.
func cmpFiles(t testing.TB, a, b string) {
	t.Helper()
	out, err := runCmd(t, 5*time.Minute, "cmp", a, b)
	if err != nil {
		t.Errorf("cmp %s %s: %v\n%s", a, b, err, out)
	}
}

// fioWrite writes size bytes of fio's pseudo-random data sequentially with 1 MiB
// writes and fsyncs the file at the end. With verify, the data carries crc32c
// headers that fioVerify can check later.
func fioWrite(t testing.TB, path, size string, seed int, verify bool) time.Duration {
	t.Helper()
	start := time.Now()
	out, err := runCmd(t, 8*time.Minute, "fio", fioSeqArgs(path, size, seed, verify, false)...)
	if err != nil || fioErr.MatchString(out) {
		t.Fatalf("fio write %s (%s): %v\n%s", path, size, err, out)
	}
	return time.Since(start)
}

// fioVerify checks a file written by fioWrite with verify.
func fioVerify(t testing.TB, path, size string, seed int) {
	t.Helper()
	out, err := runCmd(t, 8*time.Minute, "fio", fioSeqArgs(path, size, seed, true, true)...)
	bad := fioErr.FindString(out)
	for _, s := range []string{"verify: bad", "bad magic", "verify failed", "fio: pid=", "Input/output error"} {
		if bad == "" && strings.Contains(out, s) {
			bad = s
		}
	}
	if err != nil || bad != "" {
		t.Errorf("fio verify %s: err=%v, found %q\n%s", path, err, bad, out)
	}
}

func fioSeqArgs(path, size string, seed int, verify, verifyOnly bool) []string {
	a := []string{
		"--name=seq", "--filename=" + path, "--rw=write", "--bs=1M", "--size=" + size,
		// O_DIRECT with a queue: the fastest way through FUSE here (the mount
		// asks for async direct I/O), and no page cache to flush at the end.
		"--direct=1", "--ioengine=libaio", "--iodepth=8", "--end_fsync=1", "--randrepeat=1", "--randseed=" + strconv.Itoa(seed),
		"--verify_state_save=0",
	}
	if verify {
		a = append(a, "--verify=crc32c", "--verify_fatal=1", "--verify_dump=0")
		if verifyOnly {
			a = append(a, "--do_verify=1", "--verify_only")
		} else {
			a = append(a, "--do_verify=0")
		}
	}
	return a
}

// chunkHashes returns the sha256 of every chunk-sized piece of a file.
func chunkHashes(t testing.TB, path string, chunk int) [][32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	var out [][32]byte
	buf := make([]byte, chunk)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			out = append(out, sha256.Sum256(buf[:n]))
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return out
		}
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
	}
}

// writeAtSync opens path, writes b at off and fsyncs.
func writeAtSync(t testing.TB, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	writeAt(t, f, b, off)
	fsync(t, f)
}

// errnoOf returns the errno inside err, 0 if there is none.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// within reports whether |got - want| <= tol.
func within(got, want, tol uint64) bool {
	if got > want {
		return got-want <= tol
	}
	return want-got <= tol
}

func mib(n uint64) string { return fmt.Sprintf("%.2f MiB", float64(n)/MiB) }
