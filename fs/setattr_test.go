package fs

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vafs/vafs/blocks"
)

// TestMtimeNeverUndoesExtend: a timestamp change racing extending writes
// never puts the size back. Before, SetAttr read the head and wrote its
// size back without the volume's lock: in 20,000 extending writes the size
// went back 26 times, and blocks past the stale size stayed mapped, so a
// later extension showed old data instead of zeros.
func TestMtimeNeverUndoesExtend(t *testing.T) {
	f := openTest(t, t.TempDir(), blocks.NewMemStore())
	defer f.Close()
	ino := create(t, f, "grow")
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			mt := time.Unix(1_700_000_000, 0)
			if _, err := f.SetAttr(ino, SetAttrIn{Mtime: &mt}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	const n = 5000
	blk := bytes.Repeat([]byte{0xa5}, 512)
	back := 0
	for i := range n {
		end := int64(i+1) * int64(len(blk))
		if _, err := f.WriteAt(ino, blk, end-int64(len(blk))); err != nil {
			t.Fatal(err)
		}
		a, err := f.GetAttr(ino)
		if err != nil {
			t.Fatal(err)
		}
		if int64(a.Size) < end {
			back++
		}
	}
	stop.Store(true)
	wg.Wait()
	if back > 0 {
		t.Fatalf("a concurrent mtime change put the size back %d times in %d extending writes", back, n)
	}
	a, _ := f.GetAttr(ino)
	if want := uint64(n * len(blk)); a.Size != want {
		t.Fatalf("size %d after %d writes, want %d", a.Size, n, want)
	}
}
