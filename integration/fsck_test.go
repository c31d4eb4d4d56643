package integration

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// treeState hashes every regular file under dir (LOCK, meta/, segments/)
// and records every other entry by its type, by path.
func treeState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.Type().IsRegular() {
			out[p] = e.Type().String()
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[p] = fmt.Sprintf("%x", sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return out
}

func sameTree(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, h := range before {
		if a, ok := after[p]; !ok {
			t.Errorf("%s: %s is gone", what, p)
		} else if a != h {
			t.Errorf("%s: %s changed", what, p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s appeared", what, p)
		}
	}
}

var fsckHostRE = regexp.MustCompile(`superblock: host ([0-9a-f]{6})`)

// fsckHost reads the data dir's host id from fsck's output.
func fsckHost(t *testing.T, out string) uint32 {
	t.Helper()
	m := fsckHostRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("fsck output names no host id:\n%s", out)
	}
	h, _ := strconv.ParseUint(m[1], 16, 32)
	return uint32(h)
}

// segName is the file name of segment (host, seq) in DATA/segments.
func segName(data string, host uint32, seq uint64) string {
	return filepath.Join(data, "segments", fmt.Sprintf("%016x.seg", uint64(host)<<40|seq))
}

// TestFsckReadOnlyAfterKill: on a data dir left by a SIGKILLed mount (writes
// fsynced and not), `vafs fsck` changes no byte of the data dir, LOCK and
// Pebble's files included, and says clean. A segment of this host that no
// tree references is reported with its size and survives fsck; `vafs fsck
// --repair` removes it, says so, and checks clean again. A segment of
// another host is a problem that --repair never removes. The file reads
// back whole after all that.
func TestFsckReadOnlyAfterKill(t *testing.T) {
	requireRoot(t)
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	f, err := os.OpenFile(m.Path("disk.raw"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	want := pattern(8*MiB, 11, 0)
	writeAt(t, f, want, 0)
	fsync(t, f)
	fsyncDir(t, mnt)
	writeAt(t, f, pattern(4*MiB, 12, 2*MiB), 2*MiB) // never fsynced: may or may not survive
	m.Kill()
	f.Close()
	detachDead(t, mnt)

	before := treeState(t, data)
	out, err := vafs(t, 2*time.Minute, "fsck", "--data", data)
	if err != nil || !strings.Contains(out, "clean") {
		t.Fatalf("fsck of a killed mount's data dir: %v, want exit 0 and clean:\n%s", err, out)
	}
	sameTree(t, "fsck", before, treeState(t, data))
	host := fsckHost(t, out)

	stray := segName(data, host, 1<<30)
	if err := os.WriteFile(stray, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	before = treeState(t, data)
	out, err = vafs(t, 2*time.Minute, "fsck", "--data", data)
	t.Logf("fsck with a stray segment:\n%s", out)
	if err != nil || !strings.Contains(out, "clean") {
		t.Errorf("fsck with a stray segment of this host: %v, want exit 0 (a crash leaves such segments):\n%s", err, out)
	}
	if id := strings.TrimSuffix(filepath.Base(stray), ".seg"); !strings.Contains(out, "UNREFERENCED: segment "+id+" (8192 bytes)") {
		t.Errorf("fsck does not report %s with its size:\n%s", id, out)
	}
	sameTree(t, "fsck with a stray segment", before, treeState(t, data))

	out, err = vafs(t, 2*time.Minute, "fsck", "--repair", "--data", data)
	t.Logf("fsck --repair:\n%s", out)
	if err != nil || !strings.HasSuffix(strings.TrimSpace(out), "clean") {
		t.Errorf("fsck --repair: %v, want exit 0 and clean at the end:\n%s", err, out)
	}
	if id := strings.TrimSuffix(filepath.Base(stray), ".seg"); !strings.Contains(out, "REPAIRED: removed segment "+id+" (8192 bytes)") {
		t.Errorf("fsck --repair does not say it removed %s:\n%s", id, out)
	}
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Errorf("the stray segment is still there after --repair (%v)", err)
	}

	foreign := segName(data, host^0x800000, 5)
	if err := os.WriteFile(foreign, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = vafs(t, 2*time.Minute, "fsck", "--data", data)
	if err == nil || !strings.Contains(out, "PROBLEM: segment "+strings.TrimSuffix(filepath.Base(foreign), ".seg")) {
		t.Errorf("fsck with another host's segment: %v, want exit != 0 and a problem naming it:\n%s", err, out)
	}
	out, _ = vafs(t, 2*time.Minute, "fsck", "--repair", "--data", data)
	if _, err := os.Stat(foreign); err != nil {
		t.Fatalf("fsck --repair removed another host's segment (%v):\n%s", err, out)
	}

	m = startMount(t, data, mnt)
	got, err := os.ReadFile(m.Path("disk.raw"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < len(want) {
		t.Fatalf("disk.raw is %d bytes, want at least %d", len(got), len(want))
	}
	for off := 0; off < len(want); off += 4096 {
		if o := off; o < 2*MiB || o >= 6*MiB { // outside the unsynced write
			if string(got[o:o+4096]) != string(want[o:o+4096]) {
				t.Fatalf("block at %d differs after fsck and repair", o)
			}
		}
	}
	m.Stop()
	if _, err := os.Stat(foreign); err != nil {
		t.Fatalf("a mount removed another host's segment: %v", err)
	}
	os.Remove(foreign)
	checkFsck(t, data)
}

// TestFsckNotADataDir: fsck of a missing directory, an empty one and one
// holding other files exits != 0, says it is not a vafs data dir, and
// creates nothing.
func TestFsckNotADataDir(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	empty := filepath.Join(base, "empty")
	other := filepath.Join(base, "other")
	for _, d := range []string{empty, other, filepath.Join(other, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(other, "notes.txt"), []byte("not vafs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dirs := []string{filepath.Join(base, "typo"), empty, other}
	if _, err := os.Stat("/nonexistent"); os.IsNotExist(err) {
		dirs = append(dirs, "/nonexistent")
	}
	before := treeState(t, base)
	for _, d := range dirs {
		for _, args := range [][]string{{"fsck", "--data", d}, {"fsck", "--repair", "--data", d}} {
			out, err := vafs(t, time.Minute, args...)
			if err == nil || !strings.Contains(out, "vafs fsck: "+d+": not a vafs data dir (") {
				t.Errorf("vafs %s: %v, want exit != 0 and \"not a vafs data dir\":\n%s", strings.Join(args, " "), err, out)
			}
		}
	}
	sameTree(t, "fsck of directories that are not data dirs", before, treeState(t, base))
	if dirs[len(dirs)-1] == "/nonexistent" {
		if _, err := os.Stat("/nonexistent"); !os.IsNotExist(err) {
			t.Errorf("/nonexistent exists after fsck (%v)", err)
			os.RemoveAll("/nonexistent") // it did not before the test
		}
	}
}

// TestFsckRefusesMounted: a data dir a running mount holds is refused, by
// fsck and by fsck --repair, and the mount's LOCK is left as it was.
func TestFsckRefusesMounted(t *testing.T) {
	requireRoot(t)
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	lock, _ := os.ReadFile(filepath.Join(data, "LOCK"))
	for _, args := range [][]string{{"fsck", "--data", data}, {"fsck", "--repair", "--data", data}} {
		out, err := vafs(t, time.Minute, args...)
		if err == nil || !strings.Contains(out, "in use") {
			t.Errorf("vafs %s on a mounted data dir: %v, want exit != 0 and \"in use\":\n%s", strings.Join(args, " "), err, out)
		}
	}
	if now, _ := os.ReadFile(filepath.Join(data, "LOCK")); string(now) != string(lock) {
		t.Errorf("LOCK changed from %q to %q", lock, now)
	}
	m.Stop()
	checkFsck(t, data)
}
