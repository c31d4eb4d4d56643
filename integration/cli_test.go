package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestVersion(t *testing.T) {
	requireRoot(t)
	out, err := vafs(t, 10*time.Second, "version")
	if err != nil || strings.TrimSpace(out) == "" {
		t.Errorf("vafs version: err=%v output=%q, want exit 0 and a version", err, out)
	}
}

// TestMountInUse: a second mount of the same data dir fails fast with "in use" and
// does not disturb the first.
func TestMountInUse(t *testing.T) {
	requireRoot(t)
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	writeFileSync(t, m.Path("before"), []byte("first mount"))

	other := t.TempDir()
	start := time.Now()
	out, err := vafs(t, 20*time.Second, "mount", "--data", data, other)
	took := time.Since(start)
	if err == nil {
		t.Errorf("second vafs mount of %s succeeded, want an error; output:\n%s", data, out)
	} else if !strings.Contains(out, "in use") {
		t.Errorf("second vafs mount of %s: %v, want a message containing \"in use\"; output:\n%s", data, err, out)
	}
	if took > 10*time.Second {
		t.Errorf("second vafs mount took %v to fail, want fast", took)
	}
	if isMounted(other) {
		t.Errorf("%s got mounted by the second vafs mount", other)
		detach(t, other)
	}

	// The first mount still works and still has its data.
	writeFileSync(t, m.Path("after"), []byte("still works"))
	for name, want := range map[string]string{"before": "first mount", "after": "still works"} {
		got, err := os.ReadFile(m.Path(name))
		if err != nil || string(got) != want {
			t.Errorf("first mount, %s: %q %v, want %q", name, got, err, want)
		}
	}
	m.Stop()
}

func TestMountMissingMountpoint(t *testing.T) {
	requireRoot(t)
	data := t.TempDir()
	missing := filepath.Join(t.TempDir(), "no", "such", "dir")
	out, err := vafs(t, 20*time.Second, "mount", "--data", data, missing)
	if err == nil {
		t.Fatalf("vafs mount onto missing %s succeeded; output:\n%s", missing, out)
	}
	if !strings.Contains(out, "does not exist") {
		t.Errorf("vafs mount onto missing mountpoint: %v, want a message containing \"does not exist\"; output:\n%s", err, out)
	}
	if _, statErr := os.Stat(missing); statErr == nil {
		t.Errorf("vafs mount created the missing mountpoint %s", missing)
	}
}

func TestMountUnknownFlag(t *testing.T) {
	requireRoot(t)
	data, mnt := newDirs(t)
	out, err := vafs(t, 20*time.Second, "mount", "--no-such-flag", "--data", data, mnt)
	if err == nil {
		t.Errorf("vafs mount --no-such-flag succeeded; output:\n%s", out)
	} else if !strings.Contains(out, "no-such-flag") {
		t.Errorf("vafs mount --no-such-flag: %v, want the message to name the flag; output:\n%s", err, out)
	}
	if isMounted(mnt) {
		t.Errorf("%s mounted despite the unknown flag", mnt)
		detach(t, mnt)
	}
}

// TestMountBadDataDir: a data dir that cannot be created fails with a message that
// names it, and nothing is mounted.
func TestMountBadDataDir(t *testing.T) {
	requireRoot(t)
	tmp := t.TempDir()
	file := filepath.Join(tmp, "plainfile")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A read-only file system: the data dir exists but cannot be written, or
	// cannot be created.
	ro := t.TempDir()
	if err := os.Mkdir(filepath.Join(ro, "existing"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(ro, ro, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(ro, syscall.MNT_DETACH) })
	if err := syscall.Mount("", ro, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	mnt := t.TempDir()
	for _, data := range []string{
		filepath.Join(file, "data"),   // parent is a regular file: cannot be created
		file,                          // a regular file, not a directory
		filepath.Join(ro, "new"),      // on a read-only file system: cannot be created
		filepath.Join(ro, "existing"), // exists, read-only: cannot be written
	} {
		out, err := vafs(t, 20*time.Second, "mount", "--data", data, mnt)
		if err == nil {
			t.Errorf("vafs mount --data %s succeeded, want an error; output:\n%s", data, out)
		} else if !strings.Contains(out, data) && !strings.Contains(out, filepath.Dir(data)) {
			t.Errorf("vafs mount --data %s: %v, want a message naming the data dir (or its parent); output:\n%s", data, err, out)
		}
		if isMounted(mnt) {
			t.Errorf("%s mounted with unusable data dir %s", mnt, data)
			detach(t, mnt)
		}
	}
}

// TestUmountBusy: `vafs umount` of a mount that a process has its cwd in fails with
// "busy" and leaves the mount working; once the process is gone it unmounts and the
// mount process exits 0.
func TestUmountBusy(t *testing.T) {
	requireTools(t, "sleep")
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	if err := os.Mkdir(m.Path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sleeper := exec.CommandContext(ctx, "sleep", "600")
	sleeper.Dir = m.Path("d")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	sleeperDone := make(chan struct{})
	go func() { sleeper.Wait(); close(sleeperDone) }()
	t.Cleanup(func() { sleeper.Process.Kill(); <-sleeperDone })

	out, err := vafs(t, 30*time.Second, "umount", mnt)
	if err == nil {
		t.Errorf("vafs umount of a busy mount succeeded; output:\n%s", out)
	} else if !strings.Contains(out, "busy") {
		t.Errorf("vafs umount of a busy mount: %v, want a message containing \"busy\"; output:\n%s", err, out)
	}
	select {
	case <-m.Done():
		t.Fatalf("the mount process exited after a refused umount")
	case <-time.After(200 * time.Millisecond):
	}
	if !isMounted(mnt) {
		t.Fatalf("%s not mounted after a refused umount", mnt)
	}
	// No fsync: vafs umount must flush it.
	if err := os.WriteFile(m.Path("d", "f"), pattern(3*MiB+5, 77, 0), 0o644); err != nil {
		t.Fatalf("write after a refused umount: %v", err)
	}

	sleeper.Process.Kill()
	<-sleeperDone
	if out, err := vafs(t, 60*time.Second, "umount", mnt); err != nil {
		t.Fatalf("vafs umount of an idle mount: %v\n%s", err, out)
	}
	status, exited := m.WaitExit(30 * time.Second)
	if !exited {
		t.Fatalf("mount process still running 30s after vafs umount")
	}
	if status != nil {
		t.Errorf("mount process exit after vafs umount: %v, want 0", status)
	}
	if isMounted(mnt) {
		t.Errorf("%s still mounted after vafs umount", mnt)
		detach(t, mnt)
	}

	// What was written is there next time.
	m = startMount(t, data, mnt)
	got, err := os.ReadFile(m.Path("d", "f"))
	if err != nil {
		t.Fatalf("d/f after vafs umount and remount: %v", err)
	}
	expectBytes(t, "d/f (written without fsync) after vafs umount and remount", got, pattern(3*MiB+5, 77, 0))
	m.Stop()
}

// TestBackgroundMount: --background returns only once the mount answers; vafs
// umount stops it and releases the data dir.
func TestBackgroundMount(t *testing.T) {
	requireRoot(t)
	data, mnt := newDirs(t)
	t.Cleanup(func() {
		if isMounted(mnt) {
			t.Errorf("%s still mounted at the end; detaching", mnt)
			detach(t, mnt)
		}
	})
	// The daemon may keep our stdout; a file, not a pipe, keeps us from waiting on it.
	logf, err := os.CreateTemp(t.TempDir(), "bg-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, vafsBin, "mount", "--background", "--data", data, mnt)
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Run()
	logText := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
	if err != nil {
		t.Fatalf("vafs mount --background: %v\n%s", err, logText())
	}
	if !isMounted(mnt) {
		t.Fatalf("vafs mount --background returned but %s is not mounted\n%s", mnt, logText())
	}
	// It answers right away.
	writeFileSync(t, filepath.Join(mnt, "bg"), []byte("background"))

	if out, err := vafs(t, 60*time.Second, "umount", mnt); err != nil {
		t.Fatalf("vafs umount: %v\n%s", err, out)
	}
	if isMounted(mnt) {
		t.Fatalf("%s still mounted after vafs umount", mnt)
	}

	// The daemon released the data dir: a foreground mount gets it (allow the
	// daemon a moment to exit after the unmount).
	var m *Mount
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err = tryStartMount(t, data, mnt)
		if err == nil || time.Now().After(deadline) || !strings.Contains(err.Error(), "in use") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("mount after background daemon's umount: %v", err)
	}
	got, err := os.ReadFile(m.Path("bg"))
	if err != nil || string(got) != "background" {
		t.Errorf("bg after background mount + umount: %q %v", got, err)
	}
	m.Stop()
}
