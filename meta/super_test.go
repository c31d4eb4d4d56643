package meta

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/vfs"
)

// TestSuperNeverMovesBack: a commit batch that put the superblock before a
// create allocated an inode lands after the create's batch; the counter on
// disk must still be the create's. Before the superblock was re-encoded
// when its batch lands, the commit's older S overwrote the newer one and a
// reopened data dir handed out the create's inode number again.
func TestSuperNeverMovesBack(t *testing.T) {
	mem := vfs.NewMem()
	d, err := Open("meta", mem)
	if err != nil {
		t.Fatal(err)
	}
	commit := d.NewBatch()
	commit.PutSuper() // a commit captures S (Trees.Flush) ...
	create := d.NewBatch()
	ino := create.AllocIno() // ... a create allocates and lands first
	create.PutInode(ino, &Inode{Mode: 0o100644, Nlink: 1})
	if err := create.Commit(false); err != nil {
		t.Fatal(err)
	}
	if err := commit.Commit(true); err != nil { // ... and the commit lands after it
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d, err = Open("meta", mem)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if next := d.Super().NextIno; next <= ino {
		t.Fatalf("after reopen NextIno = %d, but inode %d is in use: it would be handed out again", next, ino)
	}
}

// TestSuperNewerFormatRefused: a data dir written by a newer vafs is
// refused as such, not as a corrupt record.
func TestSuperNewerFormatRefused(t *testing.T) {
	var sb Superblock
	if err := DecodeSuperblock(encodeVersioned(superVersion, &Superblock{HostID: 7, NextIno: 2, Format: DataFormat + 1}), &sb); !errors.Is(err, ErrTooNew) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("format %d: err %v, want ErrTooNew", DataFormat+1, err)
	} else if want := fmt.Sprintf("data dir format %d is newer than this vafs (%d); upgrade vafs", DataFormat+1, DataFormat); !strings.Contains(err.Error(), want) {
		t.Fatalf("err %q does not say %q", err, want)
	}
	if err := DecodeSuperblock([]byte{superVersion + 1, 0x80}, &sb); !errors.Is(err, ErrTooNew) {
		t.Fatalf("record version %d: err %v, want ErrTooNew", superVersion+1, err)
	}
	// Data dirs made before the field have no "fmt": format 1.
	type old struct {
		HostID   uint32 `msgpack:"host"`
		NextIno  uint64 `msgpack:"ino"`
		NextNode uint64 `msgpack:"node"`
		NextGen  uint64 `msgpack:"gen"`
	}
	if err := DecodeSuperblock(encodeVersioned(superVersion, &old{HostID: 7, NextIno: 9, NextNode: 3, NextGen: 4}), &sb); err != nil || sb.Format != 1 || sb.NextIno != 9 || sb.NextSnap != 1 {
		t.Fatalf("old superblock: %+v, %v", sb, err)
	}
	if err := DecodeSuperblock([]byte{superVersion, 0xc1}, &sb); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("garbage: %v, want ErrCorrupt", err)
	}

	// Through Open: a data dir whose S says format 2.
	mem := vfs.NewMem()
	d, err := Open("meta", mem)
	if err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	d.sb.Format = DataFormat + 1
	d.mu.Unlock()
	b := d.NewBatch()
	b.PutSuper()
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := Open("meta", mem); !errors.Is(err, ErrTooNew) {
		t.Fatalf("open of a format-2 data dir: %v, want ErrTooNew", err)
	}
}
