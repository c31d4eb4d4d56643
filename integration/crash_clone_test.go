package integration

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"
)

// Clones under crashes: a base volume is cloned with copy_file_range (which vafs
// answers by sharing blocks), clones are written and deleted, all with fsync, while
// the mount is SIGKILLed. After each remount the base is unchanged, every
// acknowledged clone holds the base plus its acknowledged writes, and every
// acknowledged deletion stuck. fsck (every few cycles) checks the refcounts.

const (
	cloneBaseSize = 4 * MiB
	cloneBlocks   = cloneBaseSize / blockSize
	cloneBaseSeed = 0xBA5E
	cloneFileBase = 1000 // record file ids of clones: 1000 + clone number
)

type cloneWrite struct {
	seq   uint64
	acked bool
	prev  uint64 // the acknowledged write it replaces, 0 = the base's block
}

type cloneState struct {
	id     int
	writes map[int]*cloneWrite // block -> last write
}

type cloneSet struct {
	base    []byte
	live    map[string]*cloneState // acknowledged clones
	deleted map[string]bool        // acknowledged deletions
	next    int
}

func cloneName(id int) string { return "clone" + strconv.Itoa(id) + ".img" }

// copyFileRangeFD copies n bytes from the start of in to the start of out.
func copyFileRangeFD(in, out *os.File, n int64) error {
	var inOff, outOff int64
	for inOff < n {
		r, _, e := syscall.Syscall6(uintptr(sysCopyFileRange), in.Fd(), uintptr(unsafe.Pointer(&inOff)),
			out.Fd(), uintptr(unsafe.Pointer(&outOff)), uintptr(n-inOff), 0)
		if e != 0 {
			return fmt.Errorf("copy_file_range at %d: %w", inOff, e)
		}
		if r == 0 {
			return fmt.Errorf("copy_file_range: 0 bytes at %d of %d", inOff, n)
		}
	}
	return nil
}

// setupClones writes the base volume (fsynced) into dir/clones.
func setupClones(t *testing.T, dir string) *cloneSet {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, "clones"), 0o755); err != nil {
		t.Fatal(err)
	}
	cs := &cloneSet{base: pattern(cloneBaseSize, cloneBaseSeed, 0), live: map[string]*cloneState{}, deleted: map[string]bool{}}
	writeFileSync(t, filepath.Join(dir, "clones", "base.img"), cs.base)
	fsyncDir(t, dir)
	return cs
}

// cloneWorker clones, writes and deletes; st.mu guards cs.
func cloneWorker(dir string, st *crashState, cs *cloneSet, rng *rand.Rand, stop, killed *atomic.Bool, errc chan<- error) {
	d := filepath.Join(dir, "clones")
	fail := func(err error) {
		if !killed.Load() {
			errc <- fmt.Errorf("clone worker: %w", err)
		}
	}
	syncDir := func() error {
		df, err := os.Open(d)
		if err != nil {
			return err
		}
		defer df.Close()
		return df.Sync()
	}
	buf := make([]byte, blockSize)
	for !stop.Load() {
		st.mu.Lock()
		var names []string
		for n := range cs.live {
			names = append(names, n)
		}
		st.mu.Unlock()
		op := rng.IntN(4)
		switch {
		case len(names) >= 6 && op == 0: // delete
			name := names[rng.IntN(len(names))]
			st.mu.Lock()
			delete(cs.live, name) // may or may not exist until acknowledged
			st.mu.Unlock()
			err := os.Remove(filepath.Join(d, name))
			if err == nil {
				err = syncDir()
			}
			if err != nil {
				fail(err)
				return
			}
			st.mu.Lock()
			cs.deleted[name] = true
			st.mu.Unlock()

		case len(names) == 0 || op == 1: // clone
			st.mu.Lock()
			cs.next++
			id := cs.next
			st.mu.Unlock()
			err := func() error {
				in, err := os.Open(filepath.Join(d, "base.img"))
				if err != nil {
					return err
				}
				defer in.Close()
				out, err := os.OpenFile(filepath.Join(d, cloneName(id)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
				if err != nil {
					return err
				}
				defer out.Close()
				if err := copyFileRangeFD(in, out, cloneBaseSize); err != nil {
					return err
				}
				if err := out.Sync(); err != nil {
					return err
				}
				return syncDir()
			}()
			if err != nil {
				fail(err)
				return
			}
			st.mu.Lock()
			cs.live[cloneName(id)] = &cloneState{id: id, writes: map[int]*cloneWrite{}}
			st.mu.Unlock()

		default: // write 1..3 records into a clone, then fsync
			name := names[rng.IntN(len(names))]
			st.mu.Lock()
			c := cs.live[name]
			st.mu.Unlock()
			f, err := os.OpenFile(filepath.Join(d, name), os.O_RDWR, 0)
			if err != nil {
				fail(err)
				return
			}
			var mine []*cloneWrite
			for i := 0; i < 1+rng.IntN(3); i++ {
				b := rng.IntN(cloneBlocks)
				seq := st.nextSeq()
				w := &cloneWrite{seq: seq}
				st.mu.Lock()
				old := c.writes[b]
				if old != nil && !old.acked {
					st.mu.Unlock()
					continue // one unacknowledged write per block keeps the check simple
				}
				if old != nil {
					w.prev = old.seq
				}
				c.writes[b] = w
				st.mu.Unlock()
				makeRecord(buf, cloneFileBase+c.id, b, seq)
				if _, err := f.WriteAt(buf, int64(b)*blockSize); err != nil {
					f.Close()
					fail(err)
					return
				}
				mine = append(mine, w)
			}
			err = f.Sync()
			f.Close()
			if err != nil {
				fail(err)
				return
			}
			st.mu.Lock()
			for _, w := range mine {
				w.acked = true
			}
			st.mu.Unlock()
		}
	}
}

// verifyClones runs with st.mu held, after a remount.
func verifyClones(t *testing.T, dir string, cs *cloneSet, cycle int) {
	t.Helper()
	d := filepath.Join(dir, "clones")
	got, err := os.ReadFile(filepath.Join(d, "base.img"))
	if err != nil {
		t.Fatalf("cycle %d: base.img: %v", cycle, err)
	}
	expectBytes(t, fmt.Sprintf("cycle %d: base.img (never written after cloning)", cycle), got, cs.base)
	bad := 0
	for name, c := range cs.live {
		data, err := os.ReadFile(filepath.Join(d, name))
		if err != nil || len(data) != cloneBaseSize {
			t.Errorf("cycle %d: acknowledged clone %s: %d bytes, %v", cycle, name, len(data), err)
			continue
		}
		for b := 0; b < cloneBlocks; b++ {
			blk := data[b*blockSize : (b+1)*blockSize]
			baseBlk := cs.base[b*blockSize : (b+1)*blockSize]
			w := c.writes[b]
			isBase := bytes.Equal(blk, baseBlk)
			seq, rerr := parseRecord(blk, cloneFileBase+c.id, b)
			isRec := func(want uint64) bool { return rerr == nil && want != 0 && seq == want }
			ok := false
			switch {
			case w == nil:
				ok = isBase
			case w.acked:
				ok = isRec(w.seq)
			default: // the new record or what it replaced
				ok = isRec(w.seq) || (w.prev == 0 && isBase) || isRec(w.prev)
			}
			if !ok {
				bad++
				if bad <= 10 {
					t.Errorf("cycle %d: %s block %d: holds base=%v record seq=%d (err %v); want %+v", cycle, name, b, isBase, seq, rerr, w)
				}
				continue
			}
			if w != nil && !w.acked { // what survived the crash is durable now
				switch {
				case isRec(w.seq):
					w.acked = true
				case w.prev == 0:
					delete(c.writes, b)
				default:
					c.writes[b] = &cloneWrite{seq: w.prev, acked: true}
				}
			}
		}
	}
	if bad > 10 {
		t.Errorf("cycle %d: %d bad clone blocks in all", cycle, bad)
	}
	for name := range cs.deleted {
		if _, err := os.Lstat(filepath.Join(d, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cycle %d: clone %s deleted (acknowledged) but stat says %v", cycle, name, err)
		}
	}
}
