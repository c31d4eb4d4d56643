package fs

import (
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/meta"
)

// slowSyncStore is a store whose segment syncs take a while (a busy disk):
// a commit's window between capturing the metadata under the state lock
// and landing its batch after the segment sync is then wide, as on a real
// disk, where it is milliseconds.
type slowSyncStore struct {
	*blocks.PowerCutStore
	delay time.Duration
}

type slowSyncFile struct {
	blocks.SegmentFile
	delay time.Duration
}

type slowSyncDirect struct {
	blocks.DirectFile
	delay time.Duration
}

func (s slowSyncStore) wrap(f blocks.SegmentFile, err error) (blocks.SegmentFile, error) {
	if err != nil {
		return nil, err
	}
	if df, ok := f.(blocks.DirectFile); ok {
		return slowSyncDirect{df, s.delay}, nil
	}
	return slowSyncFile{f, s.delay}, nil
}

func (s slowSyncStore) Create(id blocks.SegmentID) (blocks.SegmentFile, error) {
	return s.wrap(s.PowerCutStore.Create(id))
}

func (s slowSyncStore) Open(id blocks.SegmentID) (blocks.SegmentFile, error) {
	return s.wrap(s.PowerCutStore.Open(id))
}

func (f slowSyncFile) Sync() error {
	time.Sleep(f.delay)
	return f.SegmentFile.Sync()
}

func (f slowSyncDirect) Sync() error {
	time.Sleep(f.delay)
	return f.DirectFile.Sync()
}

// TestNamespaceRacingCommitPowerCut: creates, mkdirs and renames run while
// other goroutines write and fsync (each fsync a commit); then the power is
// cut and the data dir reopened. No two names may share an inode, no file
// may read another's data, and new creates must get inode numbers not in
// use, with nothing in them. (Issue 11 item 1: mknode's batch wrote the
// superblock S while a commit that had captured an older S landed after
// it, so S's NextIno went back on disk, and after a crash a new create took
// an inode in use and the tree of the file that had it.)
//
// Every file written holds its own inode number in its first 8 bytes.
func TestNamespaceRacingCommitPowerCut(t *testing.T) {
	for round := range 6 {
		t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
			nsRaceRound(t, uint64(round))
		})
	}
}

func nsRaceRound(t *testing.T, seed uint64) {
	d := newPCDisk(t, seed%2 == 0)
	opts := d.options(Options{Logger: log.New(io.Discard, "", 0), SegmentBlocks: 64, WriteCache: -1,
		CommitInterval: 1 << 40, CompactInterval: -1})
	slow := func() { opts.Store = slowSyncStore{d.store, 300 * time.Microsecond} }
	slow()
	f, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	stamp := func(f *FS, ino uint64) error {
		var b [BlockSize]byte
		binary.LittleEndian.PutUint64(b[:], ino)
		_, err := f.WriteAt(ino, b[:], 0)
		return err
	}
	// Files the committers write and fsync.
	var busy []uint64
	for i := range 4 {
		ino := create(t, f, fmt.Sprintf("busy%d", i))
		if err := stamp(f, ino); err != nil {
			t.Fatal(err)
		}
		busy = append(busy, ino)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	var wg, wgc sync.WaitGroup
	stop, stopCommits := make(chan struct{}), make(chan struct{})
	errs := make(chan error, 16)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	for g := range 3 { // namespace: create, mkdir, rename
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			dir, err := f.Mkdir(meta.RootIno, fmt.Sprintf("d%d", g), 0o755, 0, 0)
			if err != nil {
				fail(err)
				return
			}
			var mine []string
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				switch k := rng.IntN(10); {
				case k < 6 || len(mine) == 0:
					name := fmt.Sprintf("f%d", i)
					a, err := f.Create(dir.Ino, name, 0o644, 0, 0, 0)
					if err != nil {
						fail(fmt.Errorf("create: %w", err))
						return
					}
					if rng.IntN(2) == 0 {
						if err := stamp(f, a.Ino); err != nil {
							fail(err)
							return
						}
					}
					mine = append(mine, name)
				case k < 8:
					name := fmt.Sprintf("sub%d", i)
					if _, err := f.Mkdir(dir.Ino, name, 0o755, 0, 0); err != nil {
						fail(fmt.Errorf("mkdir: %w", err))
						return
					}
				default:
					j := rng.IntN(len(mine))
					to := fmt.Sprintf("r%d", i)
					if err := f.Rename(dir.Ino, mine[j], dir.Ino, to, 0); err != nil {
						fail(fmt.Errorf("rename: %w", err))
						return
					}
					mine[j] = to
				}
			}
		}()
	}
	for g := range 2 { // commits: a write and an fsync, or a bare commit
		wgc.Add(1)
		go func() {
			defer wgc.Done()
			rng := rand.New(rand.NewPCG(seed, 100+uint64(g)))
			for {
				select {
				case <-stopCommits:
					return
				default:
				}
				ino := busy[rng.IntN(len(busy))]
				if err := stamp(f, ino); err != nil {
					fail(err)
					return
				}
				commit := func() error { return f.Fsync(ino) }
				if rng.IntN(3) == 0 {
					commit = f.Commit
				}
				if err := commit(); err != nil {
					fail(fmt.Errorf("commit: %w", err))
					return
				}
			}
		}()
	}
	// The commits stop first and the namespace ops go on a little: the
	// last commit is one that creates raced, and the creates after it are
	// what the cut loses. (A process kill would keep them, and the newer S
	// they carry would hide the bug.)
	time.Sleep(150 * time.Millisecond)
	close(stopCommits)
	wgc.Wait()
	time.Sleep(5 * time.Millisecond)
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	d.powerCut(f, nil)
	slow()
	if f, err = Open(opts); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inUse := nsRaceCheck(t, f)
	// New creates: numbers not in use, nothing in them.
	for i := range 64 {
		a, err := f.Create(meta.RootIno, fmt.Sprintf("new%d", i), 0o644, 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if name, ok := inUse[a.Ino]; ok {
			t.Fatalf("after the power cut, create new%d got inode %d, which %s has (%d inodes in use)", i, a.Ino, name, len(inUse))
		}
		if a.Size != 0 {
			t.Fatalf("new file new%d (inode %d) has size %d", i, a.Ino, a.Size)
		}
		if n, err := f.ReadAt(a.Ino, make([]byte, BlockSize), 0); n != 0 || err != nil {
			t.Fatalf("new file new%d (inode %d) reads %d bytes, %v", i, a.Ino, n, err)
		}
		inUse[a.Ino] = fmt.Sprintf("new%d", i)
	}
	if t.Failed() {
		return
	}
	nsRaceCheck(t, f)
}

// nsRaceCheck walks the tree: every inode has one name, and a file with
// data holds its own inode number. It returns the inodes in use.
func nsRaceCheck(t *testing.T, f *FS) map[uint64]string {
	t.Helper()
	inUse := map[uint64]string{meta.RootIno: "/"}
	var walk func(dir uint64, path string)
	walk = func(dir uint64, path string) {
		ents, err := f.ReadDir(dir)
		if err != nil {
			t.Fatalf("readdir %s: %v", path, err)
		}
		for _, e := range ents {
			p := path + "/" + e.Name
			if other, ok := inUse[e.Ino]; ok {
				t.Fatalf("%s and %s share inode %d", other, p, e.Ino)
			}
			inUse[e.Ino] = p
			a, err := f.GetAttr(e.Ino)
			if err != nil {
				t.Fatalf("%s (inode %d): %v", p, e.Ino, err)
			}
			if a.IsDir() {
				walk(e.Ino, p)
				continue
			}
			if a.Nlink != 1 {
				t.Fatalf("%s (inode %d): nlink %d", p, e.Ino, a.Nlink)
			}
			if a.Size == 0 {
				continue
			}
			b := make([]byte, 8)
			if n, err := f.ReadAt(e.Ino, b, 0); n != 8 || err != nil {
				t.Fatalf("%s (inode %d, size %d): read %d, %v", p, e.Ino, a.Size, n, err)
			}
			if got := binary.LittleEndian.Uint64(b); got != e.Ino || a.Size != BlockSize {
				t.Fatalf("%s (inode %d) has size %d and the data of inode %d", p, e.Ino, a.Size, got)
			}
		}
	}
	walk(meta.RootIno, "")
	return inUse
}
