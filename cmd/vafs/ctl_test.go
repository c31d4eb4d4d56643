package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const mountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
44 22 0:39 / /mnt/vafs rw,nosuid,nodev,relatime - fuse.vafs /var/lib/vafs rw,user_id=0,group_id=0
45 44 8:2 / /mnt/vafs/scratch rw,relatime - ext4 /dev/sdb1 rw
46 22 0:40 / /mnt/with\040space rw shared:7 master:2 - fuse.vafs /data/with\040space rw
47 22 0:39 /vms /srv/vms rw - fuse.vafs /var/lib/vafs rw
48 22 0:41 / /mnt/vafs2 rw - fuse.vafs /var/lib/vafs2 rw
49 22 0:42 / /mnt/vafs2 rw - tmpfs tmpfs rw
garbage line
`

func TestPickMount(t *testing.T) {
	tab := parseMountinfo(mountinfo)
	if len(tab) != 7 {
		t.Fatalf("parsed %d entries, want 7: %+v", len(tab), tab)
	}
	for _, c := range []struct {
		path, mount, data, rel string
	}{
		{"/mnt/vafs", "/mnt/vafs", "/var/lib/vafs", ""},
		{"/mnt/vafs/vms/a.raw", "/mnt/vafs", "/var/lib/vafs", "vms/a.raw"},
		{"/mnt/vafs/.snapshots/vms/a.raw/s1", "/mnt/vafs", "/var/lib/vafs", ".snapshots/vms/a.raw/s1"},
		{"/mnt/with space/x", "/mnt/with space", "/data/with space", "x"},
		{"/srv/vms/a.raw", "/srv/vms", "/var/lib/vafs", "vms/a.raw"}, // a bind mount of a subdirectory
		{"/mnt/vafs/scratchy", "/mnt/vafs", "/var/lib/vafs", "scratchy"},
	} {
		got, err := pickMount(tab, c.path, c.path)
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		if got.mount != c.mount || got.dataDir != c.data || got.rel != c.rel {
			t.Errorf("%s: got %+v, want mount %s data %s rel %q", c.path, got, c.mount, c.data, c.rel)
		}
	}
	for _, p := range []string{
		"/etc/passwd",
		"/mnt/vafs/scratch/x", // ext4 mounted inside the vafs mount
		"/mnt/vafs2/x",        // a tmpfs stacked on a vafs mount hides it
		"/mnt/vafsx",
	} {
		if got, err := pickMount(tab, p, "ARG"); err == nil || !strings.Contains(err.Error(), "ARG is not on a vafs mount") {
			t.Errorf("%s: got %+v, %v; want not on a vafs mount", p, got, err)
		}
	}
}

func TestHuman(t *testing.T) {
	for b, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1 << 30: "1.0 GiB",
		3<<40 + 1<<39: "3.5 TiB", 1<<64 - 1: "16.0 EiB"} {
		if got := human(b); got != want {
			t.Errorf("human(%d) = %q, want %q", b, got, want)
		}
	}
}

// evalSymlinks must answer as filepath.EvalSymlinks does, results and
// errors alike: locate and locateNew rely on it for every path.
func TestEvalSymlinks(t *testing.T) {
	tmp, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	j := func(p ...string) string { return filepath.Join(append([]string{tmp}, p...)...) }
	for _, d := range []string{"a/b/c", "x", "with space"} {
		if err := os.MkdirAll(j(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(j("a/b/c/f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"rel":          "a/b",        // relative, to a directory
		"abs":          j("a/b/c/f"), // absolute, to a file
		"chain":        "rel/c",      // through another symlink
		"x/up":         "../a",       // ..
		"dangling":     "nowhere",
		"loop1":        "loop2",
		"loop2":        "loop1",
		"with space/l": "../abs",
	} {
		if err := os.Symlink(target, j(link)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{
		"/", tmp, j("a/b/c/f"), j("rel"), j("rel/c/f"), j("abs"), j("chain/f"), j("x/up/b"),
		j("with space/l"), j("dangling"), j("loop1"), j("nope"), j("nope/deeper"), j("abs/below"),
	} {
		want, werr := filepath.EvalSymlinks(p)
		got, gerr := evalSymlinks(p)
		if got != want || fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Errorf("%s: got %q, %v; EvalSymlinks says %q, %v", p, got, gerr, want, werr)
		}
	}
}
