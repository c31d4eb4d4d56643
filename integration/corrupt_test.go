package integration

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestChecksumEIO: a block corrupted on disk reads as EIO, never as wrong data; its
// neighbours and other files still read fine, and fsck does not call the data dir
// clean. The test finds the block's bytes in the data dir without knowing the
// format (blocks are stored verbatim after a record header); it fails if they are
// not stored verbatim.
func TestChecksumEIO(t *testing.T) {
	requireRoot(t)
	requireFsck(t)
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	const nblocks = 16
	const bad = 5
	victim := pattern(nblocks*blockSize, 0xC0FFEE, 0)
	writeFileSync(t, m.Path("victim.img"), victim)
	other := pattern(nblocks*blockSize, 0xBEEF, 0)
	writeFileSync(t, m.Path("other.img"), other)
	m.Stop()

	// Flip one byte in every stored copy of block `bad`.
	needle := victim[bad*blockSize : (bad+1)*blockSize]
	copies := 0
	err := filepath.WalkDir(data, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		changed := false
		for i := 0; ; {
			j := bytes.Index(b[i:], needle)
			if j < 0 {
				break
			}
			b[i+j+100] ^= 0xff
			copies++
			changed = true
			i += j + blockSize
		}
		if changed {
			t.Logf("corrupted block %d of victim.img in %s", bad, p)
			return os.WriteFile(p, b, d.Type().Perm()|0o600)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("scanning the data dir: %v", err)
	}
	if copies == 0 {
		t.Fatal("the block's bytes are not stored verbatim in the data dir (compressed or encrypted now?), so this test cannot corrupt it blindly: teach it the new format")
	}

	out, err := vafs(t, 2*time.Minute, "fsck", "--data", data)
	if err == nil {
		t.Errorf("vafs fsck on a data dir with a corrupted block exited 0; output:\n%s", out)
	}

	m = startMount(t, data, mnt)
	path := m.Path("victim.img")
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := alignedBuf(blockSize)
	n, err := f.ReadAt(buf, bad*blockSize)
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("O_DIRECT read of the corrupted block: n=%d err=%v, want EIO", n, err)
	}
	if n > 0 && !bytes.Equal(buf[:n], needle[:n]) {
		t.Errorf("O_DIRECT read of the corrupted block returned %d bytes of wrong data", n)
	}
	for b := 0; b < nblocks; b++ {
		if b == bad {
			continue
		}
		n, err := f.ReadAt(buf, int64(b)*blockSize)
		if err != nil || !bytes.Equal(buf[:n], victim[b*blockSize:(b+1)*blockSize]) {
			t.Errorf("O_DIRECT read of intact block %d next to a corrupted one: n=%d err=%v (data equal=%v)",
				b, n, err, bytes.Equal(buf[:n], victim[b*blockSize:(b+1)*blockSize]))
		}
	}
	f.Close()

	// Buffered, the whole file: an error, and whatever came back is right.
	g, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	all := make([]byte, len(victim))
	n, err = g.ReadAt(all, 0)
	g.Close()
	if err == nil {
		t.Errorf("buffered read of a file with a corrupted block succeeded")
	}
	if !bytes.Equal(all[:n], victim[:n]) {
		t.Errorf("buffered read returned %d bytes that differ from what was written", n)
	}
	got, err := os.ReadFile(m.Path("other.img"))
	if err != nil {
		t.Fatalf("other.img next to a corrupted file: %v", err)
	}
	expectBytes(t, "other.img", got, other)
	// The mount keeps working.
	writeFileSync(t, m.Path("new.img"), pattern(64*KiB, 9, 0))
	expectBytes(t, "new.img", readRange(t, m.Path("new.img"), 0, 64*KiB, true), pattern(64*KiB, 9, 0))
	m.Stop()
}
