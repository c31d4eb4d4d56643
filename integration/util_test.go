package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"
	"unsafe"
)

const (
	KiB = 1 << 10
	MiB = 1 << 20
	GiB = 1 << 30
	TiB = 1 << 40
)

// fillPattern fills b with bytes derived from seed and the absolute offset of
// each 8-byte word, so any slice of a "file of seed" can be regenerated and a
// block that landed at the wrong offset does not match.
func fillPattern(b []byte, seed uint64, off int64) {
	for i := 0; i < len(b); {
		pos := off + int64(i)
		word := uint64(pos) &^ 7
		v := mix(seed ^ word*0x9E3779B97F4A7C15)
		for j := int(pos & 7); j < 8 && i < len(b); j++ {
			b[i] = byte(v >> (8 * j))
			i++
		}
	}
}

func pattern(n int, seed uint64, off int64) []byte {
	b := make([]byte, n)
	fillPattern(b, seed, off)
	return b
}

// mix is splitmix64's finalizer.
func mix(z uint64) uint64 {
	z += 0x9E3779B97F4A7C15
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// writeAt writes b at off, fails the test on error.
func writeAt(t testing.TB, f *os.File, b []byte, off int64) {
	t.Helper()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatalf("write %s at %d len %d: %v", f.Name(), off, len(b), err)
	}
}

func fsync(t testing.TB, f *os.File) {
	t.Helper()
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", f.Name(), err)
	}
}

// fsyncDir makes a directory's entries durable.
func fsyncDir(t testing.TB, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatalf("open dir %s: %v", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatalf("fsync dir %s: %v", dir, err)
	}
}

// writeFileSync creates path with data, fsyncs it and its directory.
func writeFileSync(t testing.TB, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatalf("create %s: %v", path, err)
	}
	writeAt(t, f, data, 0)
	fsync(t, f)
	if err := f.Close(); err != nil {
		t.Fatalf("close %s: %v", path, err)
	}
	fsyncDir(t, dirOf(path))
}

func dirOf(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "/"
}

// readRange reads len bytes at off; with direct it uses O_DIRECT so the read is
// served by the file system and not by this host's page cache.
func readRange(t testing.TB, path string, off int64, n int, direct bool) []byte {
	t.Helper()
	flags := os.O_RDONLY
	if direct {
		flags |= syscall.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		t.Fatalf("open %s (direct=%v): %v", path, direct, err)
	}
	defer f.Close()
	buf := alignedBuf(n)
	got, err := f.ReadAt(buf, off)
	if err != nil && !(err == io.EOF && got == n) {
		t.Fatalf("read %s at %d len %d (direct=%v): got %d bytes, %v", path, off, n, direct, got, err)
	}
	return buf
}

// alignedBuf returns a 4096-aligned buffer (O_DIRECT needs one).
func alignedBuf(n int) []byte {
	raw := make([]byte, n+4096)
	addr := uintptr(unsafe.Pointer(&raw[0]))
	skip := int((4096 - addr%4096) % 4096)
	return raw[skip : skip+n : skip+n]
}

// expectBytes compares and describes the first difference.
func expectBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	if len(got) != len(want) {
		t.Errorf("%s: got %d bytes, want %d", what, len(got), len(want))
		return
	}
	i := 0
	for i < len(got) && got[i] == want[i] {
		i++
	}
	j := len(got) - 1
	for j > i && got[j] == want[j] {
		j--
	}
	t.Errorf("%s: bytes %d..%d differ (first: got %#02x want %#02x)", what, i, j, got[i], want[i])
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// statBlocks returns the bytes a file occupies (st_blocks*512) and its size.
func statBlocks(t testing.TB, path string) (used, size int64) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Blocks * 512, st.Size
}

const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
)

// dataExtents lists [start,end) data ranges via SEEK_DATA/SEEK_HOLE.
func dataExtents(t testing.TB, path string) [][2]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	var ext [][2]int64
	for off := int64(0); off < size; {
		d, err := f.Seek(off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break
		}
		if err != nil {
			t.Fatalf("lseek(%s, %d, SEEK_DATA): %v", path, off, err)
		}
		h, err := f.Seek(d, seekHole)
		if err != nil {
			t.Fatalf("lseek(%s, %d, SEEK_HOLE): %v", path, d, err)
		}
		if h <= d {
			t.Fatalf("lseek(%s): SEEK_HOLE from data at %d returned %d", path, d, h)
		}
		ext = append(ext, [2]int64{d, h})
		off = h
	}
	return ext
}

func fmtExtents(e [][2]int64) string {
	var b bytes.Buffer
	for _, r := range e {
		fmt.Fprintf(&b, "[%d,%d) ", r[0], r[1])
	}
	return b.String()
}
