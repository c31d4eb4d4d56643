package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestCommandsOnAMount mounts a data dir with this very binary (TestMain
// runs main when re-executed), which hands mount to a freshly built
// vafsd, and drives clone, snapshot, describe, df and
// compact through the mount's control socket, as a user would.
func TestCommandsOnAMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a FUSE mount")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("needs /dev/fuse: %v", err)
	}
	tmp, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// vafs hands mount to the engine: build it.
	engine := filepath.Join(tmp, "vafsd")
	if out, err := exec.Command("go", "build", "-o", engine, "../vafsd").CombinedOutput(); err != nil {
		t.Fatalf("go build ../vafsd: %v\n%s", err, out)
	}
	t.Setenv(engineEnv, engine)
	data, mnt := filepath.Join(tmp, "data"), filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	vafs := func(code int, args ...string) string {
		t.Helper()
		out, got := runVafs(t, args...)
		if got != code {
			t.Fatalf("vafs %s: exit %d, want %d; output:\n%s", strings.Join(args, " "), got, code, out)
		}
		return out
	}
	vafs(0, "mount", "--data", data, "--background", mnt)
	t.Cleanup(func() {
		if out, code := runVafs(t, "umount", mnt); code != 0 {
			t.Errorf("umount: %s", out)
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
		if _, err := os.Stat(filepath.Join(data, "control.sock")); !os.IsNotExist(err) {
			t.Errorf("control socket left after unmount: %v", err)
		}
	})
	// The mount process is the engine, under the name vafs was run by.
	lock, err := os.ReadFile(filepath.Join(data, "LOCK"))
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(lock))
	exe, err := os.Readlink("/proc/" + pid + "/exe")
	if err != nil || exe != engine {
		t.Errorf("mount process %s runs %q (%v), want %s", pid, exe, err, engine)
	}
	if cmdline, err := os.ReadFile("/proc/" + pid + "/cmdline"); err != nil || !strings.HasPrefix(string(cmdline), "vafs\x00mount\x00") {
		// TestMain runs main with argv[0] "vafs".
		t.Errorf("mount process %s has argv %q (%v), want vafs's argv[0], vafs", pid, cmdline, err)
	}
	st, err := os.Stat(filepath.Join(data, "control.sock"))
	if err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket once mounted: %v, %v", st, err)
	}

	p := func(rel string) string { return filepath.Join(mnt, rel) }
	if err := os.Mkdir(p("vms"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("vms/a.raw"), []byte("first"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("vms", p("link")); err != nil {
		t.Fatal(err)
	}
	vafs(0, "snapshot", "create", p("vms/a.raw"), "s1")
	out := vafs(1, "snapshot", "create", p("link/a.raw"), "s1") // through a symlink
	if want := "vafs: snapshot create " + p("link/a.raw") + " s1: snapshot exists"; strings.TrimSpace(out) != want {
		t.Fatalf("got %q, want %q", out, want)
	}
	if err := os.WriteFile(p("vms/a.raw"), []byte("second!"), 0o644); err != nil {
		t.Fatal(err)
	}
	vafs(0, "snapshot", "create", p("vms/a.raw"), "s2")

	var list []struct {
		Name    string `json:"name"`
		Size    uint64 `json:"size"`
		Created string `json:"created"`
	}
	if err := json.Unmarshal([]byte(vafs(0, "snapshot", "list", p("vms/a.raw"), "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "s1" || list[0].Size != 5 || list[1].Name != "s2" || list[1].Size != 7 || list[0].Created == "" {
		t.Fatalf("list %+v", list)
	}
	if out := vafs(0, "snapshot", "list", p("vms/a.raw")); !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "s2") {
		t.Fatalf("table:\n%s", out)
	}

	vafs(0, "clone", p(".snapshots/vms/a.raw/s1"), p("vms/a-s1.raw"))
	vafs(0, "clone", p("vms"), p("vms2"))
	vafs(1, "clone", p("vms"), p("vms2"))
	for name, want := range map[string]string{"vms/a-s1.raw": "first", "vms2/a.raw": "second!", "vms2/a-s1.raw": "first"} {
		if b, err := os.ReadFile(p(name)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", name, b, err, want)
		}
	}

	w, err := os.OpenFile(p("vms/a.raw"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	out = vafs(1, "snapshot", "rollback", p("vms/a.raw"), "s1")
	w.Close()
	if want := "file is open for writing (stop the VM first, or --force)"; !strings.Contains(out, want) {
		t.Fatalf("got %q, want %q", out, want)
	}
	vafs(0, "snapshot", "rollback", p("vms/a.raw"), "s1")
	// The mount drops the kernel's cache of the file on rollback (fs/fuse);
	// read the data without it so that this test does not depend on that.
	f, err := os.OpenFile(p("vms/a.raw"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, _ := f.Read(buf)
	f.Close()
	if string(buf[:n]) != "first" {
		t.Fatalf("after rollback: %q", buf[:n])
	}

	vafs(0, "snapshot", "delete", p("vms/a.raw"), "s1")
	out = vafs(1, "snapshot", "delete", p("vms/a.raw"), "s1")
	if !strings.Contains(out, "no such snapshot") {
		t.Fatalf("got %q", out)
	}
	vafs(2, "snapshot", "delete", p("vms/a.raw"))

	var d struct {
		Path      string            `json:"path"`
		Size      uint64            `json:"size"`
		Allocated uint64            `json:"allocated"`
		Origin    string            `json:"origin"`
		Snapshots []json.RawMessage `json:"snapshots"`
	}
	if err := json.Unmarshal([]byte(vafs(0, "describe", p("vms2/a-s1.raw"), "--json")), &d); err != nil {
		t.Fatal(err)
	}
	if d.Path != p("vms2/a-s1.raw") || d.Size != 5 || d.Allocated != 4096 || d.Origin != "vms/a-s1.raw" || d.Snapshots == nil {
		t.Fatalf("describe: %+v", d)
	}
	out = vafs(0, "describe", p("vms/a.raw"))
	for _, want := range []string{"path", "size", "5 B", "snapshot-only", "s2", "7 B"} {
		if !strings.Contains(out, want) {
			t.Fatalf("describe table lacks %q:\n%s", want, out)
		}
	}
	var u map[string]uint64
	if err := json.Unmarshal([]byte(vafs(0, "df", mnt, "--json")), &u); err != nil {
		t.Fatal(err)
	}
	// vms/a.raw, vms/a-s1.raw, vms2/a.raw, vms2/a-s1.raw; the snapshot s2.
	if u["files"] != 4 || u["snapshots"] != 1 || u["logical"] != 4*4096 || u["segments"] == 0 {
		t.Fatalf("df: %v", u)
	}
	if out := vafs(0, "df", p("vms")); !strings.Contains(out, "saved by sharing") {
		t.Fatalf("df table:\n%s", out)
	}
	if out := vafs(0, "compact", mnt); !strings.HasPrefix(out, "compacted ") {
		t.Fatalf("compact: %s", out)
	}
}
