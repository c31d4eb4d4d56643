package integration

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// qemuIO runs qemu-io commands on a raw image and fails on a non-zero exit or any
// "Pattern verification failed" / error line in the output.
func qemuIO(t testing.TB, img, cache, aio string, cmds ...string) string {
	t.Helper()
	args := []string{"-f", "raw", "-t", cache}
	if aio != "" {
		args = append(args, "-i", aio)
	}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	args = append(args, img)
	out, err := runCmd(t, 2*time.Minute, "qemu-io", args...)
	if err != nil || strings.Contains(out, "Pattern verification failed") ||
		strings.Contains(out, "failed:") || strings.Contains(out, "Input/output error") {
		t.Fatalf("qemu-io %s: err=%v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

type mapEntry struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	Data   bool  `json:"data"`
	Zero   bool  `json:"zero"`
}

// qemuMapData returns the merged [start,end) ranges `qemu-img map` reports as data.
func qemuMapData(t testing.TB, img, format string) ([][2]int64, string) {
	t.Helper()
	out := mustRun(t, 2*time.Minute, "qemu-img", "map", "--output=json", "-f", format, img)
	var ents []mapEntry
	if err := json.Unmarshal([]byte(out), &ents); err != nil {
		t.Fatalf("qemu-img map --output=json: %v\n%s", err, out)
	}
	var data [][2]int64
	for _, e := range ents {
		if !e.Data {
			continue
		}
		if n := len(data); n > 0 && data[n-1][1] == e.Start {
			data[n-1][1] = e.Start + e.Length
		} else {
			data = append(data, [2]int64{e.Start, e.Start + e.Length})
		}
	}
	return data, out
}

func sameRanges(a, b [][2]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

type imgInfo struct {
	VirtualSize int64  `json:"virtual-size"`
	ActualSize  int64  `json:"actual-size"`
	Format      string `json:"format"`
}

func qemuInfo(t testing.TB, img, format string) imgInfo {
	t.Helper()
	out := mustRun(t, time.Minute, "qemu-img", "info", "--output=json", "-f", format, img)
	var inf imgInfo
	if err := json.Unmarshal([]byte(out), &inf); err != nil {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}
	return inf
}

// TestQemuImg: create/info/map/check/convert/compare/resize with raw and qcow2 images.
func TestQemuImg(t *testing.T) {
	requireTools(t, "qemu-img", "qemu-io", "cmp")
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	raw := m.Path("disk.raw")

	mustRun(t, time.Minute, "qemu-img", "create", "-f", "raw", raw, "1G")
	inf := qemuInfo(t, raw, "raw")
	if inf.Format != "raw" || inf.VirtualSize != 1*GiB {
		t.Errorf("qemu-img info raw: %+v, want raw 1GiB", inf)
	}
	if inf.ActualSize > 1*MiB {
		t.Errorf("fresh 1 GiB raw image has actual-size %d, want a sparse file", inf.ActualSize)
	}

	// Data at the start, in the middle (then half discarded = punched) and at the end.
	qemuIO(t, raw, "writeback", "",
		"write -P 0x11 0 1M",
		"write -P 0x22 512M 2M",
		"discard 512M 1M",
		fmt.Sprintf("write -P 0x33 %d 64k", 1*GiB-64*KiB),
	)
	qemuIO(t, raw, "none", "threads",
		"read -P 0x11 0 1M",
		"read -P 0 1M 63M",
		"read -P 0 500M 12M",
		"read -P 0 512M 1M",
		"read -P 0x22 513M 1M",
		fmt.Sprintf("read -P 0x33 %d 64k", 1*GiB-64*KiB),
	)
	got, mapOut := qemuMapData(t, raw, "raw")
	wantData := [][2]int64{{0, 1 * MiB}, {513 * MiB, 514 * MiB}, {1*GiB - 64*KiB, 1 * GiB}}
	if !sameRanges(got, wantData) {
		t.Errorf("qemu-img map data ranges of the sparse raw image:\n got  %s\n want %s\nmap:\n%s",
			fmtExtents(got), fmtExtents(wantData), mapOut)
	}
	if used, _ := statBlocks(t, raw); used > 8*MiB {
		t.Errorf("raw image with ~2.1 MiB of data uses %d bytes", used)
	}

	// raw -> qcow2 -> raw round trip.
	qcow := m.Path("disk.qcow2")
	back := m.Path("back.raw")
	mustRun(t, 3*time.Minute, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow)
	out := mustRun(t, time.Minute, "qemu-img", "check", "-f", "qcow2", qcow)
	if !strings.Contains(out, "No errors were found") {
		t.Errorf("qemu-img check of converted qcow2:\n%s", out)
	}
	inf = qemuInfo(t, qcow, "qcow2")
	if inf.Format != "qcow2" || inf.VirtualSize != 1*GiB {
		t.Errorf("qemu-img info qcow2: %+v, want qcow2 1GiB", inf)
	}
	mustRun(t, 3*time.Minute, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, qcow)
	mustRun(t, 3*time.Minute, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", qcow, back)
	mustRun(t, 3*time.Minute, "qemu-img", "compare", "-f", "raw", "-F", "raw", raw, back)
	mustRun(t, 3*time.Minute, "cmp", raw, back)
	if used, _ := statBlocks(t, back); used > 16*MiB {
		t.Errorf("qemu-img convert to raw wrote a non-sparse file: %d bytes used", used)
	}
	gotBack, mapOut := qemuMapData(t, back, "raw")
	if !sameRanges(gotBack, wantData) {
		t.Errorf("qemu-img map of the round-tripped raw image:\n got  %s\n want %s\nmap:\n%s",
			fmtExtents(gotBack), fmtExtents(wantData), mapOut)
	}

	// Copy offload (copy_file_range) and parallel out-of-order writes.
	for _, c := range []struct {
		name string
		args []string
	}{
		{"offload.raw", []string{"-C"}},
		{"parallel.raw", []string{"-W", "-m", "8"}},
		{"fromqcow-parallel.raw", []string{"-W", "-m", "8"}},
	} {
		from, ffmt := raw, "raw"
		if strings.HasPrefix(c.name, "fromqcow") {
			from, ffmt = qcow, "qcow2"
		}
		args := append([]string{"convert"}, c.args...)
		args = append(args, "-f", ffmt, "-O", "raw", from, m.Path(c.name))
		mustRun(t, 3*time.Minute, "qemu-img", args...)
		mustRun(t, 3*time.Minute, "qemu-img", "compare", "-f", "raw", "-F", "raw", raw, m.Path(c.name))
		if got, mapOut := qemuMapData(t, m.Path(c.name), "raw"); !sameRanges(got, wantData) {
			t.Errorf("qemu-img map after convert %v:\n got  %s\n want %s\nmap:\n%s", c.args, fmtExtents(got), fmtExtents(wantData), mapOut)
		}
	}

	// A qcow2 image written by qemu-io, checked.
	q2 := m.Path("new.qcow2")
	mustRun(t, time.Minute, "qemu-img", "create", "-f", "qcow2", q2, "4G")
	out = mustRun(t, 2*time.Minute, "qemu-io", "-f", "qcow2",
		"-c", "write -P 0x44 0 8M", "-c", "write -P 0x55 3G 1M", "-c", "read -P 0x44 0 8M", "-c", "read -P 0x55 3G 1M", q2)
	if strings.Contains(out, "Pattern verification failed") {
		t.Errorf("qemu-io on qcow2:\n%s", out)
	}
	out = mustRun(t, time.Minute, "qemu-img", "check", "-f", "qcow2", q2)
	if !strings.Contains(out, "No errors were found") {
		t.Errorf("qemu-img check of a written qcow2:\n%s", out)
	}

	// Resize grows and shrinks a raw image.
	mustRun(t, time.Minute, "qemu-img", "resize", "-f", "raw", raw, "2G")
	if inf := qemuInfo(t, raw, "raw"); inf.VirtualSize != 2*GiB {
		t.Errorf("after resize to 2G: virtual-size %d", inf.VirtualSize)
	}
	mustRun(t, time.Minute, "qemu-img", "resize", "-f", "raw", "--shrink", raw, "768M")
	if inf := qemuInfo(t, raw, "raw"); inf.VirtualSize != 768*MiB {
		t.Errorf("after shrink to 768M: virtual-size %d", inf.VirtualSize)
	}
	qemuIO(t, raw, "writeback", "", "read -P 0x11 0 1M", "read -P 0x22 513M 1M")

	// Everything is still right after a clean remount (nothing from the page cache).
	m.Stop()
	m = startMount(t, data, mnt)
	mustRun(t, 3*time.Minute, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", back, qcow)
	out = mustRun(t, time.Minute, "qemu-img", "check", "-f", "qcow2", q2)
	if !strings.Contains(out, "No errors were found") {
		t.Errorf("qemu-img check after remount:\n%s", out)
	}
	m.Stop()
	checkFsck(t, data)
}

// TestQemuImg16TiB: the largest supported volume: a 16 TiB raw image with data at
// its last bytes, sparse, mapped correctly.
func TestQemuImg16TiB(t *testing.T) {
	requireTools(t, "qemu-img", "qemu-io")
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	img := m.Path("huge.raw")
	mustRun(t, time.Minute, "qemu-img", "create", "-f", "raw", img, "16T")
	if inf := qemuInfo(t, img, "raw"); inf.VirtualSize != 16*TiB {
		t.Fatalf("16T raw image: virtual-size %d", inf.VirtualSize)
	}
	end := int64(16*TiB - 64*KiB)
	mid := int64(7*TiB + 12345*4096)
	qemuIO(t, img, "writeback", "",
		"write -P 0x66 0 64k",
		"write -P 0x77 "+strconv.FormatInt(mid, 10)+" 64k",
		"write -P 0x88 "+strconv.FormatInt(end, 10)+" 64k")
	m.Stop()
	m = startMount(t, data, mnt)
	qemuIO(t, img, "none", "threads",
		"read -P 0x66 0 64k",
		"read -P 0x77 "+strconv.FormatInt(mid, 10)+" 64k",
		"read -P 0x88 "+strconv.FormatInt(end, 10)+" 64k",
		"read -P 0 "+strconv.FormatInt(end-MiB, 10)+" 1M")
	got, mapOut := qemuMapData(t, img, "raw")
	want := [][2]int64{{0, 64 * KiB}, {mid, mid + 64*KiB}, {end, 16 * TiB}}
	if !sameRanges(got, want) {
		t.Errorf("qemu-img map of 16 TiB image:\n got  %s\n want %s\nmap:\n%s", fmtExtents(got), fmtExtents(want), mapOut)
	}
	if used, _ := statBlocks(t, img); used > 8*MiB {
		t.Errorf("16 TiB image with 192 KiB written uses %d bytes", used)
	}
	m.Stop()
}

// TestQemuIO: pattern writes and reads through the page cache, O_DIRECT with
// thread-pool AIO and with Linux native AIO, aligned and unaligned, verified again
// after a remount.
func TestQemuIO(t *testing.T) {
	requireTools(t, "qemu-img", "qemu-io")
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	img := m.Path("io.raw")
	mustRun(t, time.Minute, "qemu-img", "create", "-f", "raw", img, "256M")

	type step struct {
		cache, aio string
		cmds       []string
	}
	steps := []step{
		{"writeback", "", []string{
			"write -P 0x5a 0 4M",
			"read -P 0x5a 0 4M",
			"write -P 0x33 1000 5000", // unaligned at both ends
			"read -P 0x5a 0 1000",
			"read -P 0x33 1000 5000",
			"read -P 0x5a 6000 4188304", // rest of the 4 MiB
			"write -P 0x34 4194303 2",   // straddles the end of the written range
			"read -P 0x34 4194303 2",
			"write -z 2M 64k", // zero range inside data
			"read -P 0 2M 64k",
			"read -P 0x5a 2162688 64k",
		}},
		{"none", "threads", []string{
			"write -P 0xa5 8M 1M",
			"read -P 0xa5 8M 1M",
			"aio_write -P 0xa6 16M 64k",
			"aio_write -P 0xa7 17M 4k",
			"aio_flush",
			"read -P 0xa6 16M 64k",
			"read -P 0xa7 17M 4k",
			"write -P 0xa8 20M 512", // sub-page O_DIRECT write
			"read -P 0xa8 20M 512",
			"read -P 0 20972032 3584", // the rest of that page stays zero
			"write -P 0xa9 24M 256k",
			"write -z -u 25231360 64k", // zeroes that may unmap (punch hole)
			"read -P 0xa9 24M 64k",
			"read -P 0 25231360 64k",
			"read -P 0xa9 25296896 128k",
		}},
		{"none", "native", []string{
			"write -P 0xb1 32M 2M",
			"read -P 0xb1 32M 2M",
			"aio_write -P 0xb2 40M 128k",
			"aio_write -P 0xb3 41M 128k",
			"aio_flush",
			"read -P 0xb2 40M 128k",
			"read -P 0xb3 41M 128k",
			"flush",
		}},
		// Mixed: what O_DIRECT wrote is what the page cache path reads and vice versa.
		{"writeback", "", []string{
			"read -P 0xa5 8M 1M",
			"read -P 0xb1 32M 2M",
			"write -P 0xc1 100M 3M",
		}},
		{"none", "native", []string{
			"read -P 0xc1 100M 3M",
			"read -P 0x33 1000 5000",
		}},
	}
	for _, s := range steps {
		qemuIO(t, img, s.cache, s.aio, s.cmds...)
	}

	m.Stop()
	m = startMount(t, data, mnt)
	qemuIO(t, img, "none", "native",
		"read -P 0x5a 0 1000",
		"read -P 0x33 1000 5000",
		"read -P 0xa5 8M 1M",
		"read -P 0xa6 16M 64k",
		"read -P 0xa7 17M 4k",
		"read -P 0xa8 20M 512",
		"read -P 0 2M 64k",
		"read -P 0xa9 24M 64k",
		"read -P 0 25231360 64k",
		"read -P 0xa9 25296896 128k",
		"read -P 0xb1 32M 2M",
		"read -P 0xb2 40M 128k",
		"read -P 0xb3 41M 128k",
		"read -P 0xc1 100M 3M",
		"read -P 0 200M 56M",
	)
	m.Stop()
}
