package integration

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Snapshots through the CLI (docs/cli-snapshots.md): create, list, delete,
// rollback, and the read-only files under MOUNT/.snapshots.

// TestSnapshotLifecycle walks one volume through several states, snapshotting
// each, and checks every snapshot's content through MOUNT/.snapshots (cmp and
// qemu-img convert), the refusals (EROFS, exit 1), list in text and JSON, delete,
// and rollback (refused while open for writing, --force, caches dropped).
func TestSnapshotLifecycle(t *testing.T) {
	requireTools(t, "cmp", "qemu-img", "cp")
	requireCommands(t, "snapshot", "clone")
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	if err := os.Mkdir(m.Path("vms"), 0o755); err != nil {
		t.Fatal(err)
	}
	const rel = "vms/a.raw"
	file := m.Path(rel)
	saved := t.TempDir() // copies of each state, off the mount
	save := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(saved, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// s1: 8 MiB written.
	writeFileSync(t, file, pattern(8*MiB, 1, 0))
	copies := map[string]string{"s1": save("s1")}
	if _, err := os.Lstat(snapPath(m, rel, "s1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("snapshot s1 before it is created: %v", err)
	}
	mustVafs(t, "snapshot", "create", file, "s1")
	if fi, err := os.Lstat(snapPath(m, rel, "s1")); err != nil || fi.Size() != 8*MiB {
		t.Errorf("snapshot s1 right after it was created (looked up in vain just before): %v %v", fi, err)
	}
	expectVafsFail(t, 1, []string{"exist"}, "snapshot", "create", file, "s1")

	// s2: part overwritten, grown to 12 MiB, with a hole in the middle.
	writeAtSync(t, file, pattern(MiB, 2, 3*MiB), 3*MiB)
	writeAtSync(t, file, pattern(64*KiB, 2, 12*MiB-64*KiB), 12*MiB-64*KiB)
	copies["s2"] = save("s2")
	mustVafs(t, "snapshot", "create", file, "s2")

	// s3: shrunk to 5 MiB + 100 bytes, then written without fsync: a snapshot
	// freezes what readers see, not only what was fsynced.
	if err := os.Truncate(file, 5*MiB+100); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(os.Getenv("VAFS_MOUNT_FLAGS"), "writeback") {
		f, err := os.OpenFile(file, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		writeAt(t, f, pattern(8*KiB, 3, 0), 0)
		f.Close()
	} else {
		writeAtSync(t, file, pattern(8*KiB, 3, 0), 0)
	}
	copies["s3"] = save("s3")
	mustVafs(t, "snapshot", "create", file, "s3")

	// The head moves on: 10 MiB.
	writeAtSync(t, file, pattern(10*MiB, 4, 0), 0)
	head := save("head")

	// Names: 255 bytes is the limit; '/', '.', '..' and empty are refused.
	long := strings.Repeat("n", 255)
	mustVafs(t, "snapshot", "create", file, long)
	for _, bad := range []string{strings.Repeat("n", 256), "a/b", ".", "..", ""} {
		expectVafsFail(t, 1, nil, "snapshot", "create", file, bad)
	}
	mustVafs(t, "snapshot", "delete", file, long)
	// Usage errors.
	expectVafsFail(t, 2, nil, "snapshot", "create", file)
	expectVafsFail(t, 2, nil, "snapshot", "delete", file)
	expectVafsFail(t, 2, nil, "snapshot", "rollback", file)
	expectVafsFail(t, 2, nil, "snapshot", "list")
	expectVafsFail(t, 2, nil, "snapshot", "list", file, "--no-such-flag")
	// Not a file on a vafs mount.
	expectVafsFail(t, 1, nil, "snapshot", "create", filepath.Join(saved, "s1"), "x")
	expectVafsFail(t, 1, nil, "snapshot", "create", m.Path("vms", "missing.raw"), "x")
	expectVafsFail(t, 1, nil, "snapshot", "create", m.Path("vms"), "x")

	sizes := map[string]int64{"s1": 8 * MiB, "s2": 12 * MiB, "s3": 5*MiB + 100}
	checkList := func(when string, want []string) []snapInfo {
		t.Helper()
		list := snapList(t, file)
		if got := snapNames(list); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: snapshot list --json names %v, want %v (oldest first)", when, got, want)
			return list
		}
		ids := map[uint64]bool{}
		var prev time.Time
		for _, s := range list {
			if s.Size != uint64(sizes[s.Name]) {
				t.Errorf("%s: snapshot %s size %d, want %d", when, s.Name, s.Size, sizes[s.Name])
			}
			if s.Allocated > s.Size+4096 || s.Allocated == 0 {
				t.Errorf("%s: snapshot %s allocated %d for size %d", when, s.Name, s.Allocated, s.Size)
			}
			if ids[s.ID] {
				t.Errorf("%s: snapshot id %d repeats", when, s.ID)
			}
			ids[s.ID] = true
			c, err := time.Parse(time.RFC3339, s.Created)
			if err != nil {
				t.Errorf("%s: snapshot %s created %q is not RFC 3339: %v", when, s.Name, s.Created, err)
			} else if c.Before(prev) || time.Since(c) > time.Hour || time.Until(c) > time.Minute {
				t.Errorf("%s: snapshot %s created %v (previous %v, now %v)", when, s.Name, c, prev, time.Now())
			} else {
				prev = c
			}
		}
		// The text form: a header, then one line per snapshot in the same order.
		out := mustVafs(t, "snapshot", "list", file)
		lines := nonEmptyLines(out)
		if len(lines) != len(want)+1 || strings.Join(strings.Fields(lines[0]), " ") != "NAME CREATED SIZE" {
			t.Errorf("%s: snapshot list: want a header NAME CREATED SIZE and %d lines:\n%s", when, len(want), out)
		} else {
			for i, w := range want {
				f := strings.Fields(lines[i+1])
				if len(f) != 3 || f[0] != w || f[2] != strconv.FormatInt(sizes[w], 10) {
					t.Errorf("%s: snapshot list line %q, want %s, a time, %d", when, lines[i+1], w, sizes[w])
				} else if _, err := time.Parse(time.RFC3339, f[1]); err != nil {
					t.Errorf("%s: snapshot list line %q: created is not RFC 3339: %v", when, lines[i+1], err)
				}
			}
		}
		// The snapshot directory lists the same names.
		ents, err := os.ReadDir(filepath.Join(mnt, ".snapshots", rel))
		if err != nil {
			t.Errorf("%s: readdir .snapshots/%s: %v", when, rel, err)
		} else {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			if fmt.Sprint(sortedCopy(names)) != fmt.Sprint(sortedCopy(want)) {
				t.Errorf("%s: .snapshots/%s lists %v, want %v", when, rel, names, want)
			}
		}
		return list
	}
	checkContent := func(when string, names ...string) {
		t.Helper()
		for _, n := range names {
			p := snapPath(m, rel, n)
			if fi, err := os.Stat(p); err != nil || fi.Size() != sizes[n] || !fi.Mode().IsRegular() {
				t.Errorf("%s: stat %s: %v %v, want a regular file of %d bytes", when, p, fi, err, sizes[n])
				continue
			}
			cmpFiles(t, copies[n], p)
		}
		cmpFiles(t, head, file)
	}
	list := checkList("after create", []string{"s1", "s2", "s3"})
	checkContent("after create", "s1", "s2", "s3")
	// A relative path from a working directory inside the mount.
	r := runVafsIn(t, m.Path("vms"), cliTimeout, "snapshot", "list", "a.raw", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"s2"`) {
		t.Errorf("snapshot list with a relative path: %v", r)
	}

	// .snapshots is hidden from the root listing but can be looked up, and
	// nothing of that name can be made in the root.
	ents, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == ".snapshots" {
			t.Errorf("the root directory lists .snapshots")
		}
	}
	if fi, err := os.Stat(filepath.Join(mnt, ".snapshots", "vms")); err != nil || !fi.IsDir() {
		t.Errorf("stat .snapshots/vms: %v %v, want a directory", fi, err)
	}
	if err := os.Mkdir(filepath.Join(mnt, ".snapshots"), 0o755); err == nil {
		t.Errorf("mkdir MOUNT/.snapshots succeeded")
	}
	if _, err := os.OpenFile(filepath.Join(mnt, ".snapshots"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
		t.Errorf("creating a file MOUNT/.snapshots succeeded")
	}

	// Read-only: every change gets EROFS.
	s1 := snapPath(m, rel, "s1")
	erofs := func(what string, err error) {
		t.Helper()
		if errnoOf(err) != syscall.EROFS {
			t.Errorf("%s on a snapshot: %v, want EROFS", what, err)
		}
	}
	_, err = os.OpenFile(s1, os.O_WRONLY, 0)
	erofs("open O_WRONLY", err)
	_, err = os.OpenFile(s1, os.O_RDWR, 0)
	erofs("open O_RDWR", err)
	erofs("truncate", os.Truncate(s1, 0))
	erofs("chmod", os.Chmod(s1, 0o600))
	erofs("setxattr", syscall.Setxattr(s1, "user.x", []byte("y"), 0))
	erofs("unlink", os.Remove(s1))
	erofs("rename", os.Rename(s1, snapPath(m, rel, "renamed")))
	_, err = os.OpenFile(snapPath(m, rel, "new"), os.O_CREATE|os.O_WRONLY, 0o644)
	erofs("create in a snapshot directory", err)
	erofs("mkdir in .snapshots", os.Mkdir(filepath.Join(mnt, ".snapshots", "vms", "newdir"), 0o755))
	if f, err := os.Open(s1); err == nil {
		_, werr := f.WriteAt([]byte("x"), 0)
		if werr == nil {
			t.Errorf("a write through a read-only fd of a snapshot succeeded")
		}
		f.Close()
	}
	checkContent("after refused changes", "s1")

	// Real clients read snapshot files directly.
	out := filepath.Join(saved, "s2-converted.raw")
	mustRun(t, 5*time.Minute, "qemu-img", "convert", "-O", "raw", snapPath(m, rel, "s2"), out)
	cmpFiles(t, copies["s2"], out)
	// cp of a snapshot onto the mount (copy_file_range answers EOPNOTSUPP, the
	// kernel or cp copies) and vafs clone of a snapshot both give its content.
	mustRun(t, 5*time.Minute, "cp", "--reflink=auto", snapPath(m, rel, "s1"), m.Path("vms", "s1-copy.raw"))
	cmpFiles(t, copies["s1"], m.Path("vms", "s1-copy.raw"))
	mustVafs(t, "clone", snapPath(m, rel, "s3"), m.Path("vms", "s3-clone.raw"))
	cmpFiles(t, copies["s3"], m.Path("vms", "s3-clone.raw"))
	writeAtSync(t, m.Path("vms", "s3-clone.raw"), pattern(4*KiB, 33, 0), 0) // writable, and the snapshot stays
	checkContent("after clone of s3 and a write to it", "s3")

	// Delete s2, just after a lookup put its entry in the kernel's cache (as
	// any ls -l or qemu-img info would).
	if _, err := os.Lstat(snapPath(m, rel, "s2")); err != nil {
		t.Errorf("lstat s2: %v", err)
	}
	mustVafs(t, "snapshot", "delete", file, "s2")
	expectVafsFail(t, 1, nil, "snapshot", "delete", file, "s2")
	expectGone(t, snapPath(m, rel, "s2"), "snapshot s2 deleted with vafs snapshot delete")
	list2 := checkList("after delete", []string{"s1", "s3"})
	if len(list) == 3 && len(list2) == 2 && (list2[0].ID != list[0].ID || list2[1].ID != list[2].ID) {
		t.Errorf("snapshot ids changed by deleting another: %+v -> %+v", list, list2)
	}
	checkContent("after delete", "s1", "s3")

	m = remount(t, m)
	checkList("after remount", []string{"s1", "s3"})
	checkContent("after remount", "s1", "s3")

	// Rollback while the file is open for writing: refused, nothing changes.
	w, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	expectVafsFail(t, 1, []string{"open for writing"}, "snapshot", "rollback", file, "s1")
	cmpFiles(t, head, file)
	// A buffered reader that has the head in its page cache.
	rd, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if b, err := io.ReadAll(bufio.NewReader(rd)); err != nil || len(b) != 10*MiB {
		t.Fatalf("reading the head: %d bytes, %v", len(b), err)
	}
	// --force rolls back under the writer.
	mustVafs(t, "snapshot", "rollback", "--force", file, "s1")
	w.Close()
	if fi, err := rd.Stat(); err != nil || fi.Size() != sizes["s1"] {
		t.Errorf("fstat of an open reader after rollback to s1: %v %v, want size %d", fi, err, sizes["s1"])
	}
	got := make([]byte, 10*MiB)
	n, err := rd.ReadAt(got, 0)
	if err != nil && err != io.EOF {
		t.Errorf("read after rollback: %v", err)
	}
	want, _ := os.ReadFile(copies["s1"])
	expectBytes(t, "the already open buffered reader after rollback to s1", got[:n], want)
	rd.Close() // nothing of the test may hold the mount busy at the remount below
	if b, err := os.ReadFile(file); err != nil {
		t.Errorf("read after rollback: %v", err)
	} else {
		expectBytes(t, "a new reader after rollback to s1", b, want)
	}
	checkList("after rollback", []string{"s1", "s3"})
	checkContentOf := func(when, path, copy string) {
		t.Helper()
		cmpFiles(t, copy, path)
	}
	checkContentOf("after rollback", snapPath(m, rel, "s1"), copies["s1"])

	// Rollback without writers needs no force; the file is writable after it and
	// the snapshot is not affected by those writes.
	rollbackNoWriters(t, file, "s3")
	checkContentOf("after rollback to s3", file, copies["s3"])
	if fi, err := os.Stat(file); err != nil || fi.Size() != sizes["s3"] {
		t.Errorf("stat after rollback to s3: %v %v, want size %d", fi, err, sizes["s3"])
	}
	writeAtSync(t, file, pattern(64*KiB, 5, MiB), MiB)
	after := save("after-s3")
	expectVafsFail(t, 1, nil, "snapshot", "rollback", file, "s2") // deleted
	expectVafsFail(t, 2, nil, "snapshot", "rollback", "--no-such-flag", file, "s3")

	m = remount(t, m)
	cmpFiles(t, after, file)
	checkList("after rollbacks and remount", []string{"s1", "s3"})
	checkContentOf("after rollbacks and remount", snapPath(m, rel, "s1"), copies["s1"])
	checkContentOf("after rollbacks and remount", snapPath(m, rel, "s3"), copies["s3"])
	cmpFiles(t, m.Path("vms", "s1-copy.raw"), copies["s1"])

	// Deleting the file deletes its snapshots (looked up just before).
	if _, err := os.Lstat(snapPath(m, rel, "s1")); err != nil {
		t.Errorf("lstat s1: %v", err)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	expectGone(t, snapPath(m, rel, "s1"), "snapshot s1 of a deleted file")
	m.Stop()
	checkFsck(t, data)
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}

// TestSnapshotThousand: 1,000 snapshots of one volume, taken in 250 rounds of a
// one-block write followed by 4 concurrent `snapshot create` (one CLI process
// costs a few hundred ms on a loaded 2-core machine, so 1,000 in a row would
// dominate the suite; concurrent creates also exercise the control socket).
// They are listed in order, kept across a remount, spot-checked by content,
// and the head reads right.
func TestSnapshotThousand(t *testing.T) {
	requireCommands(t, "snapshot")
	const (
		n      = 1000
		per    = 4 // snapshots per round, created concurrently
		rounds = n / per
		blocks = 100 // each block is rewritten 2-3 times over the run
		fileID = 77
	)
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	rel := "vol.raw"
	file := m.Path(rel)
	f, err := os.OpenFile(file, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(blocks * blockSize); err != nil {
		t.Fatal(err)
	}
	name := func(i int) string { return fmt.Sprintf("snap-%04d", i) }
	buf := make([]byte, blockSize)
	start := time.Now()
	for r := 0; r < rounds; r++ {
		makeRecord(buf, fileID, r%blocks, uint64(r+1))
		writeAt(t, f, buf, int64(r%blocks)*blockSize)
		fsync(t, f)
		res := make(chan cliResult, per)
		for k := 0; k < per; k++ {
			go func(i int) { res <- runVafs(t, "snapshot", "create", file, name(i)) }(r*per + k)
		}
		for k := 0; k < per; k++ {
			if x := <-res; x.code != 0 {
				f.Close()
				t.Fatalf("round %d: %v", r, x)
			}
		}
	}
	f.Close()
	t.Logf("%d x (4 KiB write + fsync + %d concurrent vafs snapshot create): %v", rounds, per, time.Since(start).Round(time.Millisecond))

	// want(i) is snapshot i: the volume after round r = i/per, where block b
	// holds the last round j <= r with j % blocks == b, or zeros.
	want := func(i int) []byte {
		r := i / per
		out := make([]byte, blocks*blockSize)
		for b := 0; b < blocks && b <= r; b++ {
			j := r - (r-b)%blocks
			makeRecord(out[b*blockSize:(b+1)*blockSize], fileID, b, uint64(j+1))
		}
		return out
	}
	rng := rand.New(rand.NewPCG(1000, 1))
	check := func(when string) {
		t.Helper()
		list := snapList(t, file)
		if len(list) != n {
			t.Fatalf("%s: %d snapshots listed, want %d", when, len(list), n)
		}
		// Oldest first: a round's snapshots (created concurrently) in any order
		// among themselves, after every earlier round's.
		for i, s := range list {
			var k int
			if _, err := fmt.Sscanf(s.Name, "snap-%04d", &k); err != nil || k/per != i/per {
				t.Errorf("%s: snapshot %d of the list is %q, want one of round %d (oldest first)", when, i, s.Name, i/per)
				break
			}
		}
		ents, err := os.ReadDir(filepath.Join(mnt, ".snapshots", rel))
		if err != nil || len(ents) != n {
			t.Errorf("%s: .snapshots/%s holds %d entries (%v), want %d", when, rel, len(ents), err, n)
		}
		spots := []int{0, 1, 3, 4, blocks*per - 1, blocks * per, 499, n - 2, n - 1}
		for k := 0; k < 6; k++ {
			spots = append(spots, rng.IntN(n))
		}
		for _, i := range spots {
			got, err := os.ReadFile(snapPath(m, rel, name(i)))
			if err != nil {
				t.Errorf("%s: read snapshot %s: %v", when, name(i), err)
				continue
			}
			expectBytes(t, fmt.Sprintf("%s: snapshot %s", when, name(i)), got, want(i))
		}
		head := readRange(t, file, 0, blocks*blockSize, true)
		expectBytes(t, when+": head (O_DIRECT)", head, want(n-1))
	}
	check("after 1000 snapshots")
	m = remount(t, m)
	check("after remount")
	// Deleting every other one of the first 40 leaves the rest intact.
	for i := 0; i < 40; i += 2 {
		mustVafs(t, "snapshot", "delete", file, name(i))
	}
	if list := snapList(t, file); len(list) != n-20 || (list[0].Name != name(1) && list[0].Name != name(3)) {
		t.Errorf("after deleting 20: %d snapshots, first %v, want %d starting with snap-0001 or snap-0003", len(list), snapNames(list[:min(1, len(list))]), n-20)
	}
	expectGone(t, snapPath(m, rel, name(38)), "deleted snapshot "+name(38))
	for _, i := range []int{1, 3, 39, 40, 777} {
		got, err := os.ReadFile(snapPath(m, rel, name(i)))
		if err != nil {
			t.Errorf("read snapshot %s after deletions: %v", name(i), err)
			continue
		}
		if !bytes.Equal(got, want(i)) {
			t.Errorf("snapshot %s changed by deleting others", name(i))
		}
	}
	m.Stop()
	checkFsck(t, data)
}

// rollbackNoWriters rolls back a file that nobody has open for writing. The
// kernel sends FUSE_RELEASE asynchronously after the last close(2), so a writer
// closed a moment ago may still be counted: "open for writing" is retried for a
// few seconds (and logged), anything else fails the test.
func rollbackNoWriters(t testing.TB, file, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := runVafs(t, "snapshot", "rollback", file, name)
		if r.code == 0 {
			return
		}
		if !strings.Contains(r.Output(), "open for writing") || time.Now().After(deadline) {
			t.Fatalf("want exit 0: %v", r)
		}
		t.Logf("rollback of a file closed for writing refused, retrying: %s", strings.TrimSpace(r.Output()))
		time.Sleep(200 * time.Millisecond)
	}
}

// expectGone checks that path no longer exists, at once. When the kernel still
// has it (a dentry cached for the mount's entry timeout, which the mount should
// have invalidated when the CLI deleted it), it says so, then checks again after
// the timeout to tell a stale cache from a deletion that did not happen.
func expectGone(t testing.TB, path, what string) {
	t.Helper()
	_, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	t.Errorf("%s: lstat %s right after the command returned: %v, want ENOENT (the kernel's cached entry was not invalidated)", what, path, err)
	time.Sleep(2 * time.Second)
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: lstat %s 2 s later: %v, want ENOENT: not deleted", what, path, err)
	}
}

// TestSnapshotHoles: after a snapshot and a clone, punching a hole, zeroing a
// range and truncating the head (and the clone) change neither the snapshot nor
// each other, before and after a remount; describe counts the punched blocks
// as held only by the snapshot.
func TestSnapshotHoles(t *testing.T) {
	requireTools(t, "fallocate", "truncate", "cmp")
	requireCommands(t, "snapshot", "clone", "describe")
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	a, b := m.Path("a.raw"), m.Path("b.raw")
	orig := pattern(4*MiB, 21, 0)
	writeFileSync(t, a, orig)
	saved := filepath.Join(t.TempDir(), "orig")
	if err := os.WriteFile(saved, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	mustVafs(t, "snapshot", "create", a, "s1")
	mustVafs(t, "clone", a, b)
	mustRun(t, time.Minute, "fallocate", "--punch-hole", "--offset", strconv.Itoa(MiB), "--length", strconv.Itoa(MiB), a)
	mustRun(t, time.Minute, "fallocate", "--zero-range", "--offset", strconv.Itoa(2*MiB), "--length", strconv.Itoa(64*KiB), a)
	mustRun(t, time.Minute, "truncate", "--size", strconv.Itoa(MiB), b)
	mustRun(t, time.Minute, "truncate", "--size", strconv.Itoa(4*MiB), b)
	for _, p := range []string{a, b} {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		fsync(t, f)
		f.Close()
	}
	wantA := append([]byte(nil), orig...)
	clear(wantA[MiB : 2*MiB])
	clear(wantA[2*MiB : 2*MiB+64*KiB])
	wantB := append([]byte(nil), orig...)
	clear(wantB[MiB:])
	check := func(when string) {
		t.Helper()
		for _, c := range []struct {
			path string
			want []byte
		}{{a, wantA}, {b, wantB}, {snapPath(m, "a.raw", "s1"), orig}} {
			got, err := os.ReadFile(c.path)
			if err != nil {
				t.Errorf("%s: read %s: %v", when, c.path, err)
				continue
			}
			expectBytes(t, when+": "+c.path, got, c.want)
		}
		cmpFiles(t, saved, snapPath(m, "a.raw", "s1"))
	}
	check("after punch, zero and truncate")
	d := vafsDescribe(t, a)
	if !within(d.SnapshotOnly, MiB+64*KiB, 4096) || !within(d.Allocated, 4*MiB-MiB-64*KiB, 64*KiB) {
		t.Errorf("describe a.raw: allocated %d snapshot_only %d, want ~%d and %d (the punched and zeroed blocks live on in s1 only)", d.Allocated, d.SnapshotOnly, 4*MiB-MiB-64*KiB, MiB+64*KiB)
	}
	m = remount(t, m)
	check("after remount")
	m.Stop()
	checkFsck(t, data)
}
