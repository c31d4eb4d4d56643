package fuse

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	vfs "github.com/vafs/vafs/fs"
)

// asNobody runs a shell command as uid/gid 65534 with no capabilities,
// with f as its fd 3 (opened by root, so no path under the test's 0700
// temp dirs needs to be reachable by nobody).
func asNobody(t *testing.T, f *os.File, script string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", script)
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as nobody: %s: %v: %s", script, err, out)
	}
}

// TestKillPriv: with HANDLE_KILLPRIV_V2 the kernel leaves dropping suid,
// sgid and file capabilities to vafs. A write or truncate by a caller
// without CAP_FSETID drops them; one by root keeps suid; chown drops it.
func TestKillPriv(t *testing.T) {
	// allow_other, as vafs mount sets it for root: without it the kernel
	// refuses nobody's requests on root's mount.
	mnt, f := mountFS(t, Options{AllowOther: true})
	path := filepath.Join(mnt, "prog")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o777); err != nil {
		t.Fatal(err)
	}
	ino := inoOf(t, path)
	// A v2 capability set (magic, then permitted/inheritable words),
	// stored through fs: the kernel only checks that one is there.
	capv := []byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	setPriv := func() {
		t.Helper()
		if err := syscall.Chmod(path, 0o6777); err != nil {
			t.Fatal(err)
		}
		if err := f.SetXattr(ino, capXattr, capv, 0); err != nil {
			t.Fatal(err)
		}
	}
	mode := func() uint32 {
		t.Helper()
		a, err := f.GetAttr(ino)
		if err != nil {
			t.Fatal(err)
		}
		return a.Mode & 0o7777
	}
	hasCap := func() bool {
		t.Helper()
		_, err := f.GetXattr(ino, capXattr)
		if err != nil && !errors.Is(err, vfs.ErrNoAttr) {
			t.Fatal(err)
		}
		return err == nil
	}
	open := func() *os.File {
		t.Helper()
		w, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		return w
	}

	// Root (CAP_FSETID) writes: suid and sgid stay.
	if err := syscall.Chmod(path, 0o6777); err != nil {
		t.Fatal(err)
	}
	if _, err := open().WriteAt([]byte("x"), 20); err != nil {
		t.Fatal(err)
	}
	if m := mode(); m != 0o6777 {
		t.Errorf("after a write by root: mode %o, want 6777", m)
	}

	// An unprivileged write drops suid, sgid (group-executable) and the
	// capabilities.
	setPriv()
	asNobody(t, open(), "printf x >&3")
	if m := mode(); m != 0o777 {
		t.Errorf("after a write by nobody: mode %o, want 777", m)
	}
	if hasCap() {
		t.Errorf("after a write by nobody: %s is still there", capXattr)
	}

	// So does an unprivileged truncate.
	setPriv()
	asNobody(t, open(), "truncate -s 5 /proc/self/fd/3")
	if m := mode(); m != 0o777 {
		t.Errorf("after a truncate by nobody: mode %o, want 777", m)
	}
	if a, _ := f.GetAttr(ino); a.Size != 5 {
		t.Errorf("truncate by nobody: size %d, want 5", a.Size)
	}

	// And an unprivileged open with O_TRUNC.
	setPriv()
	asNobody(t, open(), ": > /proc/self/fd/3")
	if m := mode(); m != 0o777 {
		t.Errorf("after an O_TRUNC open by nobody: mode %o, want 777", m)
	}

	// sgid without group-exec is not a privilege and stays.
	if err := syscall.Chmod(path, 0o2767); err != nil {
		t.Fatal(err)
	}
	asNobody(t, open(), "printf x >&3")
	if m := mode(); m != 0o2767 {
		t.Errorf("after a write by nobody to a 2767 file: mode %o, want 2767", m)
	}

	// chown drops suid, even by root.
	if err := syscall.Chmod(path, 0o4755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if m := mode(); m != 0o755 {
		t.Errorf("after chown: mode %o, want 755", m)
	}
}
