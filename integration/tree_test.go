package integration

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// treeSources are real header trees copied with cp -a: ~1,200 files and dirs.
var treeSources = []string{"/usr/include/linux", "/usr/include/x86_64-linux-gnu"}

// compareTrees checks that every entry under src exists under dst with the same
// type, permissions, size, mtime (to the nanosecond) and symlink target.
func compareTrees(t *testing.T, src, dst string) {
	t.Helper()
	bad := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		q := filepath.Join(dst, rel)
		a, err := os.Lstat(p)
		if err != nil {
			return err
		}
		b, err := os.Lstat(q)
		if err != nil {
			bad++
			t.Errorf("%s: %v", q, err)
			return nil
		}
		var why []string
		if a.Mode() != b.Mode() {
			why = append(why, "mode "+a.Mode().String()+" became "+b.Mode().String())
		}
		if a.Mode().IsRegular() && a.Size() != b.Size() {
			why = append(why, "size differs")
		}
		if !a.IsDir() && !a.ModTime().Equal(b.ModTime()) {
			why = append(why, "mtime "+a.ModTime().String()+" became "+b.ModTime().String())
		}
		if a.Mode()&fs.ModeSymlink != 0 {
			la, _ := os.Readlink(p)
			lb, _ := os.Readlink(q)
			if la != lb {
				why = append(why, "symlink target "+la+" became "+lb)
			}
		}
		if len(why) > 0 {
			bad++
			if bad <= 10 {
				t.Errorf("%s: %s", q, strings.Join(why, "; "))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", src, err)
	}
	if bad > 10 {
		t.Errorf("%d entries differ in all", bad)
	}
}

// TestTreeCopy: a directory tree copied with cp -a compares equal with diff -r and
// in metadata, also after a remount; hard links, a FIFO, a symlink and an xattr
// survive the remount; rm -rf empties it.
func TestTreeCopy(t *testing.T) {
	requireTools(t, "cp", "diff", "rm")
	for _, s := range treeSources {
		if _, err := os.Stat(s); err != nil {
			// From linux-libc-dev and libc6-dev, which `go test -race` (cgo) needs too.
			skipOrFail(t, "source tree %s to copy is missing: %v", s, err)
		}
	}
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	// cp -a sets permissions through fsetxattr("system.posix_acl_access") and only
	// falls back to fchmod if that fails: the mode must follow the ACL.
	one := filepath.Join(t.TempDir(), "one.h")
	if err := os.WriteFile(one, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(one, 0o644)
	mustRun(t, time.Minute, "cp", "-a", one, m.Path("one.h"))
	if fi, err := os.Stat(m.Path("one.h")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("cp -a of a 0644 file gives %v (%v), want 0644: setting system.posix_acl_access must update the mode (or fail with EOPNOTSUPP so cp uses fchmod)", fi.Mode(), err)
	}
	os.Remove(m.Path("one.h"))

	tree := m.Path("tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, s := range treeSources {
		mustRun(t, 3*time.Minute, "cp", "-a", s, tree)
	}
	t.Logf("cp -a: %v", time.Since(start).Round(time.Millisecond))
	check := func(when string) {
		t.Helper()
		for _, s := range treeSources {
			dst := filepath.Join(tree, filepath.Base(s))
			if out, err := runCmd(t, 3*time.Minute, "diff", "-r", "--no-dereference", s, dst); err != nil {
				t.Fatalf("%s: diff -r %s %s: %v\n%.4000s", when, s, dst, err, out)
			}
			compareTrees(t, s, dst)
		}
	}
	check("after cp -a")

	// Special files.
	a, b := m.Path("a.img"), m.Path("b.img")
	if err := os.WriteFile(a, []byte("one"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(a, b); err != nil {
		t.Fatalf("link: %v", err)
	}
	if err := os.WriteFile(b, []byte("two, through the second name"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(m.Path("fifo"), 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	if err := os.Symlink("tree/linux/fs.h", m.Path("sym")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setxattr(a, "user.vafs.test", []byte("xattr value"), 0); err != nil {
		t.Errorf("setxattr: %v", err)
	}
	special := func(when string) {
		t.Helper()
		var sa, sb syscall.Stat_t
		if err := syscall.Stat(a, &sa); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Stat(b, &sb); err != nil {
			t.Fatal(err)
		}
		if sa.Ino != sb.Ino || sa.Nlink != 2 {
			t.Errorf("%s: hard link: inodes %d/%d nlink %d, want the same inode and nlink 2", when, sa.Ino, sb.Ino, sa.Nlink)
		}
		if got, _ := os.ReadFile(a); string(got) != "two, through the second name" {
			t.Errorf("%s: a.img reads %q after writing through its hard link", when, got)
		}
		if fi, err := os.Lstat(m.Path("fifo")); err != nil || fi.Mode()&fs.ModeNamedPipe == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: fifo: %v %v", when, fi, err)
		}
		if l, err := os.Readlink(m.Path("sym")); err != nil || l != "tree/linux/fs.h" {
			t.Errorf("%s: symlink: %q %v", when, l, err)
		}
		if _, err := os.Stat(m.Path("sym")); err != nil {
			t.Errorf("%s: following the symlink: %v", when, err)
		}
		buf := make([]byte, 64)
		n, err := syscall.Getxattr(a, "user.vafs.test", buf)
		if err != nil || string(buf[:n]) != "xattr value" {
			t.Errorf("%s: getxattr: %q %v", when, buf[:max(n, 0)], err)
		}
	}
	special("before remount")
	m.Stop()

	m = startMount(t, data, mnt)
	check("after remount")
	special("after remount")

	// Unlinking one name keeps the other.
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(b); err != nil || string(got) != "two, through the second name" {
		t.Errorf("b.img after removing a.img: %q %v", got, err)
	}
	start = time.Now()
	mustRun(t, 3*time.Minute, "rm", "-rf", tree)
	t.Logf("rm -rf: %v", time.Since(start).Round(time.Millisecond))
	if _, err := os.Stat(tree); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tree after rm -rf: %v", err)
	}
	m.Stop()
	m = startMount(t, data, mnt)
	ents, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 3 { // b.img fifo sym
		t.Errorf("root after rm -rf and remount: %v, want [b.img fifo sym]", names)
	}
	m.Stop()
	checkFsck(t, data)
}
