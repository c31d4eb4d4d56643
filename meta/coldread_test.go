package meta

import (
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/vfs"
)

// TestColdLookupsOverlap: a lookup that must read a node from Pebble
// does not hold the trees' lock while it reads, so a lookup of another
// volume goes on meanwhile. Before, Trees.mu was held across the read:
// cold reads of every VM were serialized behind one another.
func TestColdLookupsOverlap(t *testing.T) {
	mem := vfs.NewMem()
	db, tr := openMem(t, mem)
	for vol := uint64(1); vol <= 2; vol++ {
		for b := uint64(0); b < 4096; b += 2 { // many leaves: a tree of height 2
			if err := tr.Map(vol, b, 1, 100+vol, uint32(b)); err != nil {
				t.Fatal(err)
			}
		}
	}
	commit(t, db, tr)
	cold, err := OpenTrees(db) // an empty node cache
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cold.Lookup(2, 0, 1); err != nil { // volume 2's head and path are cached
		t.Fatal(err)
	}
	if _, err := cold.Head(1); err != nil { // volume 1's head is cached; its nodes are not
		t.Fatal(err)
	}
	blocked, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	db.getHook = func(k []byte) {
		if k[0] == pfxNode {
			once.Do(func() { close(blocked); <-release })
		}
	}
	defer func() { db.getHook = nil }()
	done := make(chan error, 1)
	go func() {
		_, err := cold.Lookup(1, 10, 1) // reads volume 1's root from Pebble: held in the hook
		done <- err
	}()
	<-blocked
	other := make(chan error, 1)
	go func() {
		ms, err := cold.Lookup(2, 0, 1)
		if err == nil && (len(ms) != 1 || ms[0].Seg != 102) {
			t.Errorf("volume 2 block 0: %+v", ms)
		}
		other <- err
	}()
	select {
	case err := <-other:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("a cached lookup of volume 2 waited for volume 1's cold node read")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ms, err := cold.Lookup(1, 10, 1)
	if err != nil || len(ms) != 1 || ms[0].Seg != 101 || ms[0].Idx != 10 {
		t.Fatalf("volume 1 block 10: %+v %v", ms, err)
	}
}
