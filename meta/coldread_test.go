package meta

import (
	"fmt"
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

// coldPair is two committed volumes of a tree of height 2 each, and a
// Trees opened afresh over them (nothing cached).
func coldPair(t *testing.T) (*DB, *Trees) {
	t.Helper()
	db, tr := openMem(t, vfs.NewMem())
	for vol := uint64(1); vol <= 2; vol++ {
		for b := uint64(0); b < 4096; b += 2 {
			if err := tr.Map(vol, b, 1, 100+vol, uint32(b)); err != nil {
				t.Fatal(err)
			}
		}
	}
	commit(t, db, tr)
	cold, err := OpenTrees(db)
	if err != nil {
		t.Fatal(err)
	}
	return db, cold
}

// readsOfVolume2 runs a Lookup and a Head of volume 2 (cached) and fails
// the test if they do not finish while something of volume 1 is held.
func readsOfVolume2(t *testing.T, tr *Trees, held string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		ms, err := tr.Lookup(2, 0, 1)
		if err == nil && (len(ms) != 1 || ms[0].Seg != 102) {
			err = fmt.Errorf("volume 2 block 0: %+v", ms)
		}
		if err == nil {
			_, err = tr.Head(2)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("reads of volume 2 waited for %s", held)
	}
}

// TestColdHeadReadOverlaps: the first read of a volume after a mount reads
// its head from Pebble without holding the trees' lock, so the reads of a
// volume already in use go on meanwhile. Before, Trees.head read it under
// Trees.mu, from Head (every ReadAt) and from Lookup.
func TestColdHeadReadOverlaps(t *testing.T) {
	for _, first := range []string{"Head", "Lookup"} {
		t.Run(first, func(t *testing.T) {
			db, cold := coldPair(t)
			if _, err := cold.Lookup(2, 0, 1); err != nil { // volume 2 in use; volume 1 not read yet
				t.Fatal(err)
			}
			blocked, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			db.getHook = func(k []byte) {
				if k[0] == pfxHead {
					once.Do(func() { close(blocked); <-release })
				}
			}
			defer func() { db.getHook = nil }()
			done := make(chan error, 1)
			go func() {
				var err error
				if first == "Head" {
					_, err = cold.Head(1)
				} else {
					_, err = cold.Lookup(1, 10, 1)
				}
				done <- err
			}()
			<-blocked
			func() {
				defer close(release)
				readsOfVolume2(t, cold, "volume 1's cold head read")
			}()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			ms, err := cold.Lookup(1, 10, 1)
			if err != nil || len(ms) != 1 || ms[0].Seg != 101 || ms[0].Idx != 10 {
				t.Fatalf("volume 1 block 10: %+v %v", ms, err)
			}
		})
	}
}

// TestLookupsWalkTogether: lookups hold the trees' lock shared, so one
// volume's walk does not wait for another's. Before, every lookup and Head
// took Trees.mu exclusively: with more reads in flight than CPUs, a walk
// preempted while holding it (or a waiter handed it and not yet running)
// queued the reads of every volume behind it (the block profile of 4
// volumes read at once had a dozen reads waiting in Trees.Head on average).
func TestLookupsWalkTogether(t *testing.T) {
	_, cold := coldPair(t)
	for vol := uint64(1); vol <= 2; vol++ { // both trees cached: no Pebble read below
		if _, err := cold.Lookup(vol, 0, 4096); err != nil {
			t.Fatal(err)
		}
	}
	blocked, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	cold.walkHook = func(vol uint64) {
		if vol == 1 {
			once.Do(func() { close(blocked); <-release })
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := cold.Lookup(1, 10, 1) // parked inside its walk
		done <- err
	}()
	<-blocked
	func() {
		defer close(release)
		readsOfVolume2(t, cold, "volume 1's walk")
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
