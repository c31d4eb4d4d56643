package fs

import (
	"testing"
	"time"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/meta"
)

// TestStatFSTellsTheTruth: df on an empty mount shows (nearly) nothing
// used, used grows by what is written, size = used + available, and used
// inodes are the inodes in use. Before, used was the host disk's used
// space plus the metadata reserve (70% on an empty mount here), and used
// inodes the next inode number.
func TestStatFSTellsTheTruth(t *testing.T) {
	store := blocks.NewMemStore()
	store.Capacity = 64 << 30
	f := openTest(t, t.TempDir(), store)
	defer f.Close()
	st, err := f.StatFS()
	if err != nil {
		t.Fatal(err)
	}
	used := (st.Blocks - st.Bfree) * BlockSize
	if used > 32<<20 {
		t.Fatalf("empty data dir: %d MiB used; want only the metadata (< 32 MiB)", used>>20)
	}
	if st.Bavail != st.Bfree {
		t.Fatalf("bavail %d != bfree %d", st.Bavail, st.Bfree)
	}
	if got := st.Files - st.Ffree; got != 1 {
		t.Fatalf("empty data dir: %d inodes used; want 1 (the root)", got)
	}

	ino := create(t, f, "a")
	create(t, f, "b")
	if _, err := f.Mkdir(meta.RootIno, "d", 0o755, 0, 0); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 40<<20)
	for i := range data {
		data[i] = byte(i / 4096)
	}
	if _, err := f.WriteAt(ino, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Fsync(ino); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the inode count is refreshed once a second
	st2, err := f.StatFS()
	if err != nil {
		t.Fatal(err)
	}
	used2 := (st2.Blocks - st2.Bfree) * BlockSize
	if used2 < used+40<<20 || used2 > used+48<<20 {
		t.Fatalf("after writing 40 MiB: used %d MiB (was %d MiB); want 40..48 MiB more", used2>>20, used>>20)
	}
	_, free, _ := store.Space()
	if avail := st2.Bavail * BlockSize; avail > free || avail+(2<<30) < free {
		t.Fatalf("available %d, the store has %d free: want free less the reserve", avail, free)
	}
	if got := st2.Files - st2.Ffree; got != 4 {
		t.Fatalf("%d inodes used; want 4 (root, a, b, d)", got)
	}
}
