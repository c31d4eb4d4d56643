package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeEngine writes an engine that prints its pid and arguments.
func fakeEngine(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, engineName)
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho \"$$\" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// runAs runs bin as vafs (TestMain runs main) with env added, and returns
// its pid, combined output and exit status.
func runAs(t *testing.T, bin string, env []string, args ...string) (int, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "VAFS_TEST_MAIN=1"), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid, out.String(), code
}

// The engine's commands are handed to vafsd in the same process, with the
// same arguments, wherever vafsd is found.
func TestEngineHandOver(t *testing.T) {
	args := []string{"mount", "--data", "/no/such/data", "--background", "/no/such/mnt"}
	want := func(what string, pid int, out string, code int) {
		t.Helper()
		if w := strconv.Itoa(pid) + " " + strings.Join(args, " ") + "\n"; code != 0 || out != w {
			t.Errorf("%s: exit %d, output %q; want %q (same pid, same arguments)", what, code, out, w)
		}
	}
	emptyPath := "PATH=" + t.TempDir()

	env := fakeEngine(t, t.TempDir())
	pid, out, code := runAs(t, os.Args[0], []string{engineEnv + "=" + env, emptyPath}, args...)
	want(engineEnv, pid, out, code)

	inPath := t.TempDir()
	fakeEngine(t, inPath)
	pid, out, code = runAs(t, os.Args[0], []string{"PATH=/nonexistent:relative:" + inPath}, args...)
	want("PATH", pid, out, code)

	// Next to the executable: a copy of this test binary with a vafsd
	// beside it, found before the one in PATH.
	beside := t.TempDir()
	self := copyExe(t, os.Args[0], filepath.Join(beside, "vafs"))
	fakeEngine(t, beside)
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, engineName), []byte("#!/bin/sh\necho wrong engine\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	pid, out, code = runAs(t, self, []string{"PATH=" + other}, args...)
	want("beside vafs", pid, out, code)
}

func copyExe(t *testing.T, from, to string) string {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return to
}

// Without an engine, its commands fail naming where it was looked for,
// and their help still works (it comes from the shared definitions).
func TestEngineMissing(t *testing.T) {
	empty := t.TempDir()
	env := []string{"PATH=" + empty}
	for _, args := range [][]string{{"mount", "/mnt"}, {"fsck"}, {"debug", "loopback", "a", "b"}} {
		_, out, code := runAs(t, os.Args[0], env, args...)
		if code != 1 || !strings.Contains(out, "needs the vafs engine vafsd") ||
			!strings.Contains(out, filepath.Join(filepath.Dir(os.Args[0]), engineName)) || !strings.Contains(out, "PATH") {
			t.Errorf("vafs %s without an engine: exit %d, output %q", strings.Join(args, " "), code, out)
		}
	}
	_, out, code := runAs(t, os.Args[0], []string{engineEnv + "=" + filepath.Join(empty, "nope")}, "fsck")
	if code != 1 || !strings.Contains(out, engineEnv+"="+filepath.Join(empty, "nope")) {
		t.Errorf("bad %s: exit %d, output %q", engineEnv, code, out)
	}
	_, out, code = runAs(t, os.Args[0], env, "mount", "--help")
	for _, flag := range []string{"vafs mount", "MOUNTPOINT", "--data", "--background", "--debug", "--writeback-cache"} {
		if code != 0 || !strings.Contains(out, flag) {
			t.Errorf("vafs mount --help: exit %d, lacks %q:\n%s", code, flag, out)
		}
	}
	_, out, code = runAs(t, os.Args[0], env, "fsck", "--help")
	if code != 0 || !strings.Contains(out, "--data") {
		t.Errorf("vafs fsck --help: exit %d:\n%s", code, out)
	}
}
