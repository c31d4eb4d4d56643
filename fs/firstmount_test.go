package fs

import (
	"bytes"
	"io"
	"log"
	"testing"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/vafs/vafs/blocks"
)

// TestFirstMountPowerCut: on a fresh data dir meta/ is created by Pebble,
// which syncs it but not its entry in the data dir: before the fix a power
// cut on the first mount lost every fsynced commit.
func TestFirstMountPowerCut(t *testing.T) {
	mfs, store := vfs.NewStrictMem(), blocks.NewPowerCutStore(true)
	opts := Options{DataDir: t.TempDir(), Store: store, MetaFS: mfs, Logger: log.New(io.Discard, "", 0), WriteCache: -1}
	f, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	a := create(t, f, "a")
	f.WriteAt(a, bytes.Repeat([]byte{7}, 8192), 0)
	if err := f.Fsync(a); err != nil {
		t.Fatal(err)
	}
	mfs.SetIgnoreSyncs(true)
	opts.Store = store.Crash()
	mCrash(f)
	mfs.ResetToSyncedState()
	mfs.SetIgnoreSyncs(false)
	g, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.GetAttr(a); err != nil {
		t.Fatalf("fsynced file after a power cut on the first mount: %v", err)
	}
}
