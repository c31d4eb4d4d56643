package meta

import (
	"testing"
	"time"

	"github.com/cockroachdb/pebble/vfs"
)

// TestLookupHeadOfDeletedSnapshotEnds: a reader took a snapshot's head
// (fs.ReadSnapshotAt: SnapshotByID, then LookupHead on the copy), then the
// snapshot was deleted and the nodes only it reached were freed (not yet
// committed: still in Pebble, and in t.freed). LookupHead on the stale
// head must end (with the old mappings or an error), not spin: lookupRetry
// reads the freed node from Pebble, does not cache it because it is
// freed, walks again, misses it again, forever. In fs the reader holds
// gcMu shared meanwhile, so a commit that removes dead segments (holding
// the state lock, waiting for gcMu) stops every writer too.
func TestLookupHeadOfDeletedSnapshotEnds(t *testing.T) {
	db, tr := openMem(t, vfs.NewMem())
	for b := uint64(0); b < 4096; b += 2 { // many leaves: a tree of height 2
		if err := tr.Map(1, b, 1, 100, uint32(b)); err != nil {
			t.Fatal(err)
		}
	}
	commit(t, db, tr)
	s, err := tr.CreateSnapshot(1, "s", 1)
	if err != nil {
		t.Fatal(err)
	}
	commit(t, db, tr)
	stale := s.Head                                 // what ReadSnapshotAt holds
	if err := tr.Map(1, 0, 1, 200, 0); err != nil { // copies the path to block 0 (root and leaf)
		t.Fatal(err)
	}
	if err := tr.DeleteSnapshot(1, "s"); err != nil { // frees the old root and leaf
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := tr.LookupHead(stale, 0, 1)
		done <- err
	}()
	select {
	case err := <-done:
		t.Logf("LookupHead of the deleted snapshot's head: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("LookupHead of a deleted snapshot's head still running after 10 s (lookupRetry spins on a freed node)")
	}
}
