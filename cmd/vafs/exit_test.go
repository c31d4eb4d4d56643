package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestMain runs the command instead of the tests when re-executed by
// runVafs, so that exit statuses can be checked without building a binary.
func TestMain(m *testing.M) {
	if os.Getenv("VAFS_TEST_MAIN") == "1" {
		os.Args = append([]string{"vafs"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runVafs(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), "VAFS_TEST_MAIN=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("vafs %v: %v", args, err)
	}
	return string(out), 0
}

func TestExitStatus(t *testing.T) {
	notVafs := t.TempDir() // a tmp dir is not on a vafs mount
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"snapshot", "create", notVafs + "/a"}, 2, "usage: vafs snapshot create FILE NAME"},
		{[]string{"snapshot", "create", "a", "b", "c"}, 2, "snapshot create takes 2 arguments"},
		{[]string{"snapshot", "list", "--bogus", "a"}, 2, "flag provided but not defined"},
		{[]string{"snapshot", "list", "a", "--bogus"}, 2, "usage: vafs snapshot list FILE"},
		{[]string{"snapshot", "rollback", "a", "s1", "--json"}, 2, "flag provided but not defined: --json"},
		{[]string{"clone", "a"}, 2, "usage: vafs clone SRC DST"},
		{[]string{"describe"}, 2, "describe takes 1 argument (FILE), got 0"},
		{[]string{"df", "a", "b"}, 2, "df takes 0 to 1 arguments"},
		{[]string{"compact"}, 2, "usage: vafs compact PATH"},
		{[]string{"snapshot", "create", notVafs + "/a", "s1"}, 1, "vafs: snapshot create " + notVafs + "/a s1: " + notVafs + "/a is not on a vafs mount"},
		{[]string{"snapshot", "rollback", "--force", notVafs, "s1"}, 1, "vafs: rollback " + notVafs + ": " + notVafs + " is not on a vafs mount"},
		{[]string{"snapshot", "list", notVafs, "--json"}, 1, "is not on a vafs mount"},
		{[]string{"clone", notVafs, notVafs + "/b"}, 1, "vafs: clone " + notVafs + " " + notVafs + "/b: " + notVafs + " is not on a vafs mount"},
		{[]string{"describe", notVafs + "/missing/file"}, 1, notVafs + "/missing/file is not on a vafs mount"},
		{[]string{"compact", notVafs}, 1, "is not on a vafs mount"},
		{[]string{"df", notVafs, "--json"}, 1, "vafs: df " + notVafs + ": " + notVafs + " is not on a vafs mount"},
		{[]string{"describe", "--help"}, 0, "vafs describe"},
		{[]string{"snapshot", "list", "a", "--help"}, 0, "vafs snapshot list"},
		{[]string{"snapshot", "frobnicate", "a"}, 2, `unknown snapshot command "frobnicate"`},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
	} {
		out, code := runVafs(t, c.args...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("vafs %s: exit %d, output:\n%s\nwant exit %d and %q", strings.Join(c.args, " "), code, out, c.code, c.want)
		}
	}
}
