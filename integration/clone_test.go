package integration

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// Clones through `vafs clone` and cp --reflink=auto (docs/cli-snapshots.md):
// O(1) in space, equal in content, isolated afterwards, durable across a
// remount; directory trees keep their metadata.

// TestClone1GiB: a 1 GiB fully written file is cloned; the clone compares equal,
// costs no physical space, and writes to either side never show in the other,
// before and after umount+mount.
func TestClone1GiB(t *testing.T) {
	requireTools(t, "fio", "cmp", "du")
	requireCommands(t, "clone", "df")
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	if err := os.Mkdir(m.Path("vms"), 0o755); err != nil {
		t.Fatal(err)
	}
	a, b := m.Path("vms", "a.raw"), m.Path("vms", "b.raw")
	took := fioWrite(t, a, "1g", 1, false)
	t.Logf("fio wrote 1 GiB in %v", took.Round(time.Millisecond))

	before := vafsDf(t, mnt)
	segsBefore := duApparent(t, filepath.Join(data, "segments"))
	start := time.Now()
	r := runVafs(t, "clone", a, b)
	took = time.Since(start)
	if r.code != 0 {
		t.Fatalf("want exit 0: %v", r)
	}
	if strings.TrimSpace(r.stdout) != "" {
		t.Errorf("vafs clone printed %q on stdout, want nothing", r.stdout)
	}
	t.Logf("vafs clone of 1 GiB took %v", took.Round(time.Millisecond))
	after := vafsDf(t, mnt)
	segsAfter := duApparent(t, filepath.Join(data, "segments"))
	t.Logf("df before clone: %+v", before)
	t.Logf("df after clone:  %+v", after)
	t.Logf("segments: %d -> %d bytes", segsBefore, segsAfter)

	// Space: the clone maps 1 GiB more but stores nothing new.
	if d := int64(after.Physical) - int64(before.Physical); d > 4*MiB || d < -4*MiB {
		t.Errorf("physical grew by %d bytes on cloning 1 GiB, want ~0 (df before %+v, after %+v)", d, before, after)
	}
	if d := int64(after.Logical) - int64(before.Logical); !within(uint64(max(d, 0)), GiB, 4096) {
		t.Errorf("logical grew by %d bytes on cloning 1 GiB, want 1 GiB", d)
	}
	if after.Files != before.Files+1 {
		t.Errorf("df files %d -> %d, want one more", before.Files, after.Files)
	}
	if !within(after.Saved, before.Saved+GiB, 4*MiB) {
		t.Errorf("df saved %d -> %d, want +1 GiB", before.Saved, after.Saved)
	}
	if d := segsAfter - segsBefore; d > 10*MiB {
		t.Errorf("segment files grew by %d bytes on cloning 1 GiB, want < 10 MiB", d)
	}
	if fi, err := os.Stat(b); err != nil || fi.Size() != GiB {
		t.Fatalf("clone: stat %v %v, want 1 GiB", fi, err)
	}
	cmpFiles(t, a, b)
	if t.Failed() {
		t.FailNow()
	}

	// Isolation. hashes are per-MiB sha256 of the common original content;
	// changed maps MiB index -> the bytes each file must hold there now.
	const chunk = MiB
	orig := chunkHashes(t, a, chunk)
	if len(orig) != GiB/chunk {
		t.Fatalf("read %d MiB of %s, want 1024", len(orig), a)
	}
	changedA := map[int][]byte{}
	changedB := map[int][]byte{}
	write := func(path string, changed map[int][]byte, idx int, seed uint64) {
		buf := pattern(chunk, seed, int64(idx)*chunk)
		writeAtSync(t, path, buf, int64(idx)*chunk)
		changed[idx] = buf
	}
	// check reads every MiB of both files when full, else the written MiBs,
	// their neighbours and every 16th (reading 2 GiB through FUSE five times
	// would dominate the test).
	check := func(when string, full bool) {
		t.Helper()
		for _, f := range []struct {
			path    string
			changed map[int][]byte
		}{{a, changedA}, {b, changedB}} {
			var got map[int][32]byte
			if full {
				all := chunkHashes(t, f.path, chunk)
				if len(all) != len(orig) {
					t.Errorf("%s: %s has %d MiB, want %d", when, f.path, len(all), len(orig))
					continue
				}
				got = map[int][32]byte{}
				for i, h := range all {
					got[i] = h
				}
			} else {
				idx := map[int]bool{}
				for i := 0; i < len(orig); i += 16 {
					idx[i] = true
				}
				for _, ch := range []map[int][]byte{changedA, changedB} {
					for i := range ch {
						for _, j := range []int{i - 1, i, i + 1} {
							if j >= 0 && j < len(orig) {
								idx[j] = true
							}
						}
					}
				}
				got = map[int][32]byte{}
				for i := range idx {
					got[i] = sha256.Sum256(readRange(t, f.path, int64(i)*chunk, chunk, true))
				}
			}
			bad := 0
			for i := range got {
				want := orig[i]
				if c, ok := f.changed[i]; ok {
					want = sha256Sum(c)
				}
				if got[i] != want {
					bad++
					if bad <= 5 {
						_, mine := f.changed[i]
						t.Errorf("%s: %s MiB %d differs (written through this name: %v)", when, f.path, i, mine)
					}
				}
			}
			if bad > 5 {
				t.Errorf("%s: %s: %d MiB differ in all", when, f.path, bad)
			}
		}
	}
	write(b, changedB, 100, 0xB1)         // the clone only
	write(a, changedA, 200, 0xA1)         // the source only
	write(a, changedA, 300, 0xA2)         // both, differently
	write(b, changedB, 300, 0xB2)         //
	write(b, changedB, len(orig)-1, 0xB3) // the last MiB
	check("after writes", false)
	m = remount(t, m)
	check("after umount+mount", false)
	write(a, changedA, 100, 0xA3) // where b was written before the remount
	write(b, changedB, 200, 0xB4)
	check("after more writes", false)
	umountCLI(t, m)
	m = startMount(t, data, mnt)
	check("after vafs umount + mount", true)
	m.Stop()
	checkFsck(t, data)
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// TestCloneErrors: clone refuses an existing destination (file or directory), a
// missing source, a missing parent and a destination off the mount with exit 1
// and leaves things as they were; a wrong argument count is a usage error (2).
func TestCloneErrors(t *testing.T) {
	requireCommands(t, "clone")
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	a, b := m.Path("a.raw"), m.Path("b.raw")
	aData, bData := pattern(256*KiB, 1, 0), pattern(128*KiB, 2, 0)
	writeFileSync(t, a, aData)
	writeFileSync(t, b, bData)
	if err := os.Mkdir(m.Path("dir"), 0o755); err != nil {
		t.Fatal(err)
	}

	expectVafsFail(t, 1, []string{"exist"}, "clone", a, b)
	expectVafsFail(t, 1, []string{"exist"}, "clone", a, m.Path("dir"))
	expectVafsFail(t, 1, []string{"exist"}, "clone", m.Path("dir"), b)
	expectVafsFail(t, 1, []string{"missing.raw"}, "clone", m.Path("missing.raw"), m.Path("c.raw"))
	expectVafsFail(t, 1, nil, "clone", a, m.Path("no", "such", "c.raw"))
	outside := filepath.Join(t.TempDir(), "c.raw")
	expectVafsFail(t, 1, nil, "clone", a, outside)
	expectVafsFail(t, 1, nil, "clone", outside, m.Path("c.raw"))
	expectVafsFail(t, 2, nil, "clone", a)
	expectVafsFail(t, 2, nil, "clone", a, m.Path("c.raw"), m.Path("d.raw"))

	for _, p := range []string{m.Path("c.raw"), outside, m.Path("dir", "a.raw")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after failed clones: %v, want it not to exist", p, err)
		}
	}
	if got, err := os.ReadFile(b); err != nil || !bytes.Equal(got, bData) {
		t.Errorf("b.raw after a refused clone onto it: %d bytes, %v; want its old content", len(got), err)
	}
	ents, _ := os.ReadDir(m.Path("dir"))
	if len(ents) != 0 {
		t.Errorf("dir after a refused clone onto it holds %d entries, want none", len(ents))
	}
	// And a clone that is allowed still works after the refusals, and is
	// visible at once although its name was just looked up in vain.
	if _, err := os.Lstat(m.Path("dir", "a.raw")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir/a.raw before the clone: %v", err)
	}
	mustVafs(t, "clone", a, m.Path("dir", "a.raw"))
	if got, err := os.ReadFile(m.Path("dir", "a.raw")); err != nil || !bytes.Equal(got, aData) {
		t.Errorf("dir/a.raw: %d bytes, %v; want a.raw's content", len(got), err)
	}
	m.Stop()
	checkFsck(t, data)
}

// treeEntry is what a clone of a tree must keep of each entry.
type treeEntry struct {
	mode     fs.FileMode
	uid, gid uint32
	size     int64
	mtime    time.Time
	link     string
	xattrs   map[string]string
	ino      uint64
}

func readTree(t *testing.T, root string) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		e := treeEntry{mode: fi.Mode(), uid: st.Uid, gid: st.Gid, mtime: fi.ModTime(), ino: st.Ino, xattrs: listXattrs(t, p)}
		if fi.Mode().IsRegular() {
			e.size = fi.Size()
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			e.link, _ = os.Readlink(p)
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

// listXattrs reads the user.* xattrs of p without following a symlink.
func listXattrs(t *testing.T, p string) map[string]string {
	t.Helper()
	buf := make([]byte, 64*KiB)
	n, err := llistxattr(p, buf)
	if err != nil {
		if errnoOf(err) == syscall.ENOTSUP || errnoOf(err) == syscall.ENODATA {
			return nil
		}
		t.Errorf("llistxattr %s: %v", p, err)
		return nil
	}
	out := map[string]string{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		v := make([]byte, 64*KiB)
		m, err := lgetxattr(p, name, v)
		if err != nil {
			t.Errorf("lgetxattr %s %s: %v", p, name, err)
			continue
		}
		out[name] = string(v[:m])
	}
	return out
}

// llistxattr and lgetxattr do not follow a final symlink (the syscall package
// has only the following variants).
func llistxattr(path string, dest []byte) (int, error) {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return 0, err
	}
	r, _, e := syscall.Syscall(syscall.SYS_LLISTXATTR, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&dest[0])), uintptr(len(dest)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func lgetxattr(path, name string, dest []byte) (int, error) {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return 0, err
	}
	n, err := syscall.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	r, _, e := syscall.Syscall6(syscall.SYS_LGETXATTR, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(n)), uintptr(unsafe.Pointer(&dest[0])), uintptr(len(dest)), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// TestCloneTree: `vafs clone` of a directory tree (nested dirs, files of several
// sizes and modes, owners, times, symlinks, xattrs, a hard link) gives a tree
// equal in content and metadata, also after a remount; the copies are
// independent files.
func TestCloneTree(t *testing.T) {
	requireTools(t, "cmp", "diff", "setfattr", "getfattr")
	requireCommands(t, "clone")
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	src := m.Path("vm1")
	rng := rand.New(rand.NewPCG(7, 7))

	mkdir := func(rel string, mode os.FileMode) {
		p := filepath.Join(src, rel)
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(p, uint32(mode)); err != nil { // no umask; raw bits (setuid, sticky)
			t.Fatal(err)
		}
	}
	file := func(rel string, size int, mode os.FileMode) {
		p := filepath.Join(src, rel)
		writeFileSync(t, p, pattern(size, rng.Uint64(), 0))
		if err := syscall.Chmod(p, uint32(mode)); err != nil {
			t.Fatal(err)
		}
	}
	mkdir("", 0o750)
	mkdir("etc", 0o755)
	mkdir("etc/ssh", 0o700)
	mkdir("disks", 0o755)
	mkdir("disks/empty", 0o1777)
	mkdir("a", 0o755)
	mkdir("a/b", 0o755)
	mkdir("a/b/c", 0o711)
	file("disks/root.raw", 8*MiB+3*KiB, 0o600)
	file("disks/data.raw", 2*MiB, 0o644)
	file("etc/hostname", 7, 0o644)
	file("etc/ssh/key", 411, 0o400)
	file("a/b/c/deep.bin", 70*KiB, 0o755)
	file("a/run.sh", 100, 0o4755)
	file("empty", 0, 0o640)
	// A sparse file: a block at 1 GiB and nothing before it.
	sparse := filepath.Join(src, "disks", "sparse.raw")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, f, pattern(4*KiB, 9, GiB), GiB)
	fsync(t, f)
	f.Close()
	if err := os.Symlink("disks/root.raw", filepath.Join(src, "root-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../etc/hostname", filepath.Join(src, "a", "b", "up-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent/target", filepath.Join(src, "dangling")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "disks", "data.raw"), filepath.Join(src, "disks", "data-hardlink.raw")); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct{ rel, name, val string }{
		{"disks/root.raw", "user.vafs.tier", "replicated"},
		{"disks/root.raw", "user.bin", "\x00\x01\xff binary"},
		{"etc", "user.dir", "on a directory"},
		{"", "user.top", "top"},
		{"empty", "user.empty", ""},
	} {
		args := []string{"-n", x.name}
		if x.val != "" {
			args = append(args, "-v", fmt.Sprintf("0x%x", x.val))
		}
		if out, err := runCmd(t, 30*time.Second, "setfattr", append(args, filepath.Join(src, x.rel))...); err != nil {
			t.Fatalf("setfattr %s %s: %v\n%s", x.rel, x.name, err, out)
		}
	}
	// Owners and times (nanoseconds), set last so that nothing above changes them.
	if err := os.Lchown(filepath.Join(src, "etc", "ssh", "key"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(src, "etc", "ssh"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(src, "root-link"), 4321, 8765); err != nil {
		t.Fatal(err)
	}
	when := time.Date(2020, 2, 29, 12, 34, 56, 123456789, time.UTC)
	for _, rel := range []string{"disks/root.raw", "etc/hostname", "a/b/c/deep.bin", "a/b/c", "etc/ssh", "disks/empty"} {
		if err := os.Chtimes(filepath.Join(src, rel), when, when); err != nil {
			t.Fatal(err)
		}
		when = when.Add(time.Hour + 7*time.Nanosecond)
	}
	fsyncDir(t, mnt)

	dst := m.Path("vm2")
	mustVafs(t, "clone", src, dst)
	srcTree := readTree(t, src)

	compare := func(when string) {
		t.Helper()
		got := readTree(t, dst)
		var names []string
		for k := range srcTree {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, rel := range names {
			a := srcTree[rel]
			b, ok := got[rel]
			if !ok {
				t.Errorf("%s: %s missing in the clone", when, rel)
				continue
			}
			var why []string
			if a.mode != b.mode {
				why = append(why, fmt.Sprintf("mode %v became %v", a.mode, b.mode))
			}
			if a.uid != b.uid || a.gid != b.gid {
				why = append(why, fmt.Sprintf("owner %d:%d became %d:%d", a.uid, a.gid, b.uid, b.gid))
			}
			if a.size != b.size {
				why = append(why, fmt.Sprintf("size %d became %d", a.size, b.size))
			}
			if !a.mtime.Equal(b.mtime) {
				why = append(why, fmt.Sprintf("mtime %v became %v", a.mtime, b.mtime))
			}
			if a.link != b.link {
				why = append(why, fmt.Sprintf("symlink target %q became %q", a.link, b.link))
			}
			if fmt.Sprint(a.xattrs) != fmt.Sprint(b.xattrs) {
				why = append(why, fmt.Sprintf("xattrs %q became %q", a.xattrs, b.xattrs))
			}
			if b.ino == a.ino {
				why = append(why, "same inode as the source")
			}
			if len(why) > 0 {
				t.Errorf("%s: clone of %s: %s", when, rel, strings.Join(why, "; "))
			}
			if a.mode.IsRegular() {
				cmpFiles(t, filepath.Join(src, rel), filepath.Join(dst, rel))
			}
		}
		for rel := range got {
			if _, ok := srcTree[rel]; !ok {
				t.Errorf("%s: the clone has %s, which the source has not", when, rel)
			}
		}
		// The hard link became two files.
		if h1, h2 := got["disks/data.raw"], got["disks/data-hardlink.raw"]; h1.ino == h2.ino {
			t.Errorf("%s: hard-linked data.raw and data-hardlink.raw share inode %d in the clone, want separate files", when, h1.ino)
		}
		// Real clients agree.
		if out, err := runCmd(t, 3*time.Minute, "diff", "-r", "--no-dereference", src, dst); err != nil {
			t.Errorf("%s: diff -r %s %s: %v\n%.4000s", when, src, dst, err, out)
		}
		dump := func(root string) string {
			out, err := runCmdIn(t, root, time.Minute, "getfattr", "-R", "-h", "-d", "-m", "^user\\.", "-e", "hex", ".")
			if err != nil {
				t.Errorf("getfattr -R in %s: %v\n%s", root, err, out)
			}
			return sortedBlocks(out)
		}
		if a, b := dump(src), dump(dst); a != b {
			t.Errorf("%s: getfattr dumps differ:\nsource:\n%s\nclone:\n%s", when, a, b)
		}
		if l, err := os.Readlink(filepath.Join(dst, "root-link")); err == nil {
			if fi, err := os.Stat(filepath.Join(dst, "root-link")); err != nil || fi.Size() != 8*MiB+3*KiB {
				t.Errorf("%s: root-link in the clone (-> %s) resolves to %v %v", when, l, fi, err)
			}
		}
		if ext := dataExtents(t, filepath.Join(dst, "disks", "sparse.raw")); len(ext) != 1 || ext[0] != [2]int64{GiB, GiB + 4*KiB} {
			t.Errorf("%s: sparse.raw in the clone has data extents %s, want [%d,%d)", when, fmtExtents(ext), GiB, GiB+4*KiB)
		}
	}
	compare("after clone")
	if t.Failed() {
		t.FailNow()
	}

	// The copies are independent, both ways.
	writeAtSync(t, filepath.Join(dst, "disks", "root.raw"), pattern(4*KiB, 77, 0), 0)
	writeAtSync(t, filepath.Join(src, "etc", "hostname"), []byte("changed"), 0)
	writeAtSync(t, filepath.Join(dst, "disks", "data-hardlink.raw"), pattern(4*KiB, 78, 0), 4096)
	if err := syscall.Setxattr(filepath.Join(dst, "etc"), "user.dir", []byte("changed in the clone"), 0); err != nil {
		t.Errorf("setxattr in the clone: %v", err)
	}
	checkIndependent := func(when string) {
		t.Helper()
		if got := readRange(t, filepath.Join(src, "disks", "root.raw"), 0, 4*KiB, true); bytes.Equal(got, pattern(4*KiB, 77, 0)) {
			t.Errorf("%s: a write to the clone's root.raw shows in the source", when)
		}
		if got, _ := os.ReadFile(filepath.Join(dst, "etc", "hostname")); strings.HasPrefix(string(got), "changed") {
			t.Errorf("%s: a write to the source's etc/hostname shows in the clone", when)
		}
		if got := readRange(t, filepath.Join(dst, "disks", "data.raw"), 4096, 4*KiB, true); bytes.Equal(got, pattern(4*KiB, 78, 0)) {
			t.Errorf("%s: a write to data-hardlink.raw in the clone shows in its former hard link data.raw", when)
		}
		if got := readRange(t, filepath.Join(src, "disks", "data-hardlink.raw"), 4096, 4*KiB, true); bytes.Equal(got, pattern(4*KiB, 78, 0)) {
			t.Errorf("%s: a write to data-hardlink.raw in the clone shows in the source", when)
		}
		if x := listXattrs(t, filepath.Join(src, "etc")); x["user.dir"] != "on a directory" {
			t.Errorf("%s: source etc xattr user.dir = %q after changing the clone's", when, x["user.dir"])
		}
	}
	checkIndependent("after writes")
	m = remount(t, m)
	checkIndependent("after remount")
	// Undo the changes and the trees must compare equal again, after a remount.
	writeAtSync(t, filepath.Join(dst, "disks", "root.raw"), readRange(t, filepath.Join(src, "disks", "root.raw"), 0, 4*KiB, false), 0)
	writeAtSync(t, filepath.Join(src, "etc", "hostname"), readRange(t, filepath.Join(dst, "etc", "hostname"), 0, 7, false), 0)
	writeAtSync(t, filepath.Join(dst, "disks", "data-hardlink.raw"), readRange(t, filepath.Join(src, "disks", "data-hardlink.raw"), 4096, 4*KiB, false), 4096)
	if err := syscall.Setxattr(filepath.Join(dst, "etc"), "user.dir", []byte("on a directory"), 0); err != nil {
		t.Errorf("setxattr in the clone: %v", err)
	}
	for _, rel := range []string{"disks/root.raw", "etc/hostname", "disks/data-hardlink.raw"} {
		cmpFiles(t, filepath.Join(src, rel), filepath.Join(dst, rel))
	}
	m.Stop()
	checkFsck(t, data)
}

// sortedBlocks sorts getfattr's blank-line-separated per-file blocks, so that
// two dumps compare equal whatever order the directories listed their entries.
func sortedBlocks(s string) string {
	blocks := strings.Split(strings.TrimSpace(s), "\n\n")
	sort.Strings(blocks)
	return strings.Join(blocks, "\n\n")
}

// TestReflinkCopy10GiB: cp --reflink=auto of a fully written 10 GiB image
// (coreutils uses copy_file_range for a non-sparse source) shares the blocks:
// the data dir grows by less than 1% and the copy reads back equal.
func TestReflinkCopy10GiB(t *testing.T) {
	requireTools(t, "fio", "cp", "du")
	data, mnt := newDirs(t)
	gib := int64(10)
	if s := os.Getenv("VAFS_REFLINK_GIB"); s != "" { // a smaller image on a slow disk
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 {
			gib = n
		}
	}
	size := gib * GiB
	if free := freeBytes(t, data); free < uint64(size+4*GiB) {
		t.Skipf("skipping: the data disk has %.1f GiB free; this test needs %d GiB (VAFS_REFLINK_GIB sets a smaller image)", float64(free)/GiB, gib+4)
	}
	m := startMount(t, data, mnt)
	src, dst := m.Path("base.raw"), m.Path("vm1.raw")
	took := fioWrite(t, src, fmt.Sprintf("%dg", gib), 3, false)
	t.Logf("fio wrote %d GiB in %v (%.0f MiB/s)", gib, took.Round(time.Millisecond), float64(size)/MiB/took.Seconds())
	if ext := dataExtents(t, src); len(ext) != 1 || ext[0] != [2]int64{0, size} {
		t.Fatalf("the source is not fully written: data extents %s", fmtExtents(ext))
	}
	duBefore := duApparent(t, data)

	start := time.Now()
	mustRun(t, 10*time.Minute, "cp", "--reflink=auto", src, dst)
	took = time.Since(start)
	f, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	fsync(t, f)
	f.Close()
	duAfter := duApparent(t, data)
	grew := duAfter - duBefore
	t.Logf("cp --reflink=auto of %d GiB took %v; data dir %d -> %d bytes (grew %d bytes, %.3f%%)",
		gib, took.Round(time.Millisecond), duBefore, duAfter, grew, float64(grew)*100/float64(size))
	if grew > size/100 {
		t.Errorf("the data dir grew by %d bytes (%.1f%% of %d GiB) on cp --reflink=auto, want < 1%%: the copy did not share blocks", grew, float64(grew)*100/float64(size), gib)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Size() != size {
		t.Fatalf("copy: %v %v, want %d bytes", fi, err, size)
	}
	// Spot checks (comparing 2 x 10 GiB through FUSE would dominate the suite's
	// runtime): the first and last MiB and 30 random MiB, with O_DIRECT.
	offs := []int64{0, size - MiB}
	rng := rand.New(rand.NewPCG(3, 3))
	for i := 0; i < 30; i++ {
		offs = append(offs, rng.Int64N(size/MiB)*MiB)
	}
	spot := func(when string) {
		t.Helper()
		for _, off := range offs {
			if off == size/2 && when != "after cp" {
				continue // written below
			}
			a := readRange(t, src, off, MiB, true)
			b := readRange(t, dst, off, MiB, true)
			expectBytes(t, fmt.Sprintf("%s: copy vs source at %d", when, off), b, a)
		}
	}
	spot("after cp")
	// A write to the copy stays there, across a remount.
	mid := size / 2
	w := pattern(MiB, 0xC0, mid)
	old := readRange(t, src, mid, MiB, true)
	writeAtSync(t, dst, w, mid)
	m = remount(t, m)
	spot("after remount")
	expectBytes(t, "copy in the middle after a write and a remount", readRange(t, dst, mid, MiB, true), w)
	expectBytes(t, "source in the middle after a write to the copy", readRange(t, src, mid, MiB, true), old)
	m.Stop()
}
