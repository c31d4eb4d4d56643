package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Space accounting (vafs describe / df) on a known layout, and space coming
// back after clones are overwritten and originals deleted (vafs compact).

// TestDescribeDf: 64 MiB written, cloned, 16 MiB of the clone overwritten, a
// snapshot, 8 MiB more overwritten: describe --json and df --json must report
// exactly the unique / shared / snapshot-only / physical figures of that layout
// (to a block), and the figures come back when the snapshot and the source go.
func TestDescribeDf(t *testing.T) {
	requireCommands(t, "clone", "snapshot", "describe", "df")
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	if err := os.Mkdir(m.Path("vms"), 0o755); err != nil {
		t.Fatal(err)
	}
	a, b := m.Path("vms", "a.raw"), m.Path("vms", "b.raw")
	writeFileSync(t, a, pattern(64*MiB, 1, 0))
	// A hole after the data: size 100 MiB, 64 MiB allocated.
	if err := os.Truncate(a, 100*MiB); err != nil {
		t.Fatal(err)
	}

	const tol = 4096 // "within a block"
	type want struct {
		size, allocated, unique, shared, snapOnly uint64
		origin                                    string // substring; "" = must be empty; "*" = anything
		snaps                                     []string
	}
	desc := func(when, path string, w want) description {
		t.Helper()
		d := vafsDescribe(t, path)
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err == nil && d.Ino != st.Ino {
			t.Errorf("%s: describe %s: ino %d, stat says %d", when, path, d.Ino, st.Ino)
		}
		if !strings.HasSuffix(d.Path, strings.TrimPrefix(path, mnt+"/")) {
			t.Errorf("%s: describe %s: path %q", when, path, d.Path)
		}
		check := func(what string, got, want uint64) {
			if !within(got, want, tol) {
				t.Errorf("%s: describe %s: %s = %d (%s), want %d (%s)", when, filepath.Base(path), what, got, mib(got), want, mib(want))
			}
		}
		check("size", d.Size, w.size)
		check("allocated", d.Allocated, w.allocated)
		check("unique", d.Unique, w.unique)
		check("shared", d.Shared, w.shared)
		check("snapshot_only", d.SnapshotOnly, w.snapOnly)
		if d.Shared+d.Unique != d.Allocated {
			t.Errorf("%s: describe %s: unique %d + shared %d != allocated %d", when, filepath.Base(path), d.Unique, d.Shared, d.Allocated)
		}
		if w.origin != "*" && ((w.origin == "") != (d.Origin == "") || !strings.Contains(d.Origin, w.origin)) {
			t.Errorf("%s: describe %s: origin %q, want %q", when, filepath.Base(path), d.Origin, w.origin)
		}
		if got := snapNames(d.Snapshots); fmt.Sprint(got) != fmt.Sprint(w.snaps) && !(len(got) == 0 && len(w.snaps) == 0) {
			t.Errorf("%s: describe %s: snapshots %v, want %v", when, filepath.Base(path), got, w.snaps)
		}
		return d
	}
	df := func(when string, files, snaps int, logical, snapLogical, physical uint64) dfUsage {
		t.Helper()
		u := vafsDf(t, mnt)
		t.Logf("%s: df %+v", when, u)
		if u.Files != files || u.Snapshots != snaps {
			t.Errorf("%s: df files %d snapshots %d, want %d and %d", when, u.Files, u.Snapshots, files, snaps)
		}
		check := func(what string, got, want uint64) {
			if !within(got, want, tol) {
				t.Errorf("%s: df %s = %d (%s), want %d (%s)", when, what, got, mib(got), want, mib(want))
			}
		}
		check("logical", u.Logical, logical)
		check("snapshot_logical", u.SnapshotLogical, snapLogical)
		check("physical", u.Physical, physical)
		check("saved", u.Saved, logical+snapLogical-physical)
		if u.Stored < u.Physical {
			t.Errorf("%s: df stored %d < physical %d: segment files cannot hold less than the live blocks", when, u.Stored, u.Physical)
		}
		if u.Segments < 1 || u.Metadata == 0 {
			t.Errorf("%s: df segments %d metadata %d, want both > 0", when, u.Segments, u.Metadata)
		}
		// The same mount found from a file path and from the mountpoint.
		if v := vafsDf(t, b); v.Physical != u.Physical || u.Files != v.Files || v.Logical != u.Logical {
			t.Errorf("%s: df of a file and of the mountpoint disagree: %+v vs %+v", when, v, u)
		}
		return u
	}

	desc("written", a, want{size: 100 * MiB, allocated: 64 * MiB, unique: 64 * MiB})
	df("written", 1, 0, 64*MiB, 0, 64*MiB)

	mustVafs(t, "clone", a, b)
	writeAtSync(t, b, pattern(16*MiB, 2, 16*MiB), 16*MiB) // [16, 32) MiB
	desc("cloned, 16 MiB of the clone overwritten", a, want{size: 100 * MiB, allocated: 64 * MiB, unique: 16 * MiB, shared: 48 * MiB})
	desc("cloned, 16 MiB of the clone overwritten", b, want{size: 100 * MiB, allocated: 64 * MiB, unique: 16 * MiB, shared: 48 * MiB, origin: "a.raw"})
	df("cloned, 16 MiB of the clone overwritten", 2, 0, 128*MiB, 0, 80*MiB)

	mustVafs(t, "snapshot", "create", b, "s1")
	writeAtSync(t, b, pattern(8*MiB, 3, 16*MiB), 16*MiB) // [16, 24) MiB again
	// b: [16,24) new and only b's; [24,32) shared with s1; the rest shared with a and s1.
	// s1 alone holds b's first [16,24).
	d := desc("snapshot, 8 MiB more overwritten", b, want{size: 100 * MiB, allocated: 64 * MiB, unique: 8 * MiB, shared: 56 * MiB, snapOnly: 8 * MiB, origin: "a.raw", snaps: []string{"s1"}})
	if len(d.Snapshots) == 1 && (d.Snapshots[0].Size != 100*MiB || !within(d.Snapshots[0].Allocated, 64*MiB, tol)) {
		t.Errorf("describe b: snapshot s1 %+v, want size 100 MiB, allocated 64 MiB", d.Snapshots[0])
	}
	desc("snapshot, 8 MiB more overwritten", a, want{size: 100 * MiB, allocated: 64 * MiB, unique: 16 * MiB, shared: 48 * MiB})
	df("snapshot, 8 MiB more overwritten", 2, 1, 128*MiB, 64*MiB, 88*MiB)

	// The text forms name what the JSON does, in human units.
	out := mustVafs(t, "describe", b)
	for _, s := range []string{"b.raw", "s1", "MiB", "a.raw"} {
		if !strings.Contains(out, s) {
			t.Errorf("vafs describe %s: no %q in:\n%s", b, s, out)
		}
	}
	out = mustVafs(t, "df", mnt)
	for _, s := range []string{"physical", "MiB"} {
		if !strings.Contains(strings.ToLower(out), strings.ToLower(s)) {
			t.Errorf("vafs df %s: no %q in:\n%s", mnt, s, out)
		}
	}
	expectVafsFail(t, 1, nil, "describe", m.Path("vms", "missing.raw"))
	expectVafsFail(t, 2, nil, "describe")

	// The same figures after a remount.
	m = remount(t, m)
	desc("after remount", b, want{size: 100 * MiB, allocated: 64 * MiB, unique: 8 * MiB, shared: 56 * MiB, snapOnly: 8 * MiB, origin: "a.raw", snaps: []string{"s1"}})
	df("after remount", 2, 1, 128*MiB, 64*MiB, 88*MiB)

	// Deleting the snapshot gives back what only it held.
	mustVafs(t, "snapshot", "delete", b, "s1")
	desc("snapshot deleted", b, want{size: 100 * MiB, allocated: 64 * MiB, unique: 16 * MiB, shared: 48 * MiB, origin: "a.raw"})
	df("snapshot deleted", 2, 0, 128*MiB, 0, 80*MiB)

	// Deleting the source leaves b as the only owner of everything.
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	desc("source deleted", b, want{size: 100 * MiB, allocated: 64 * MiB, unique: 64 * MiB, origin: "*"})
	df("source deleted", 1, 0, 64*MiB, 0, 64*MiB)
	m.Stop()
	checkFsck(t, data)
}

var compactLine = regexp.MustCompile(`compacted (\d+) segments, moved (\d+) blocks, freed (\d+) bytes`)

// TestSpaceReclaim: 2 GiB written, cloned, the clone fully overwritten, the
// original deleted: after vafs compact and an unmount the data dir holds about
// 2 GiB (within 15%). Then segments two-thirds dead (a file partly
// overwritten) are reclaimed by vafs compact, and everything still verifies.
func TestSpaceReclaim(t *testing.T) {
	requireTools(t, "fio", "du")
	requireCommands(t, "clone", "compact", "df")
	data, mnt := newDirs(t)
	if free := freeBytes(t, data); free < 6*GiB {
		t.Skipf("skipping: the data disk has %.1f GiB free; this test needs 6 GiB", float64(free)/GiB)
	}
	m := startMount(t, data, mnt)
	a, b := m.Path("a.raw"), m.Path("b.raw")
	took := fioWrite(t, a, "2g", 1, false)
	t.Logf("fio wrote 2 GiB in %v", took.Round(time.Millisecond))
	mustVafs(t, "clone", a, b)
	took = fioWrite(t, b, "2g", 2, true)
	t.Logf("fio overwrote the 2 GiB clone in %v", took.Round(time.Millisecond))
	t.Logf("data dir with both: %d bytes", duApparent(t, data))
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	fsyncDir(t, mnt)
	u := vafsDf(t, mnt)
	t.Logf("df after deleting the original: %+v", u)
	if u.Files != 1 || !within(u.Physical, 2*GiB, 4*MiB) || !within(u.Logical, 2*GiB, 4096) {
		t.Errorf("df after deleting the original: %+v, want 1 file, 2 GiB logical and physical", u)
	}
	var freed uint64
	for i := 0; i < 3; i++ {
		out := mustVafs(t, "compact", mnt)
		mm := compactLine.FindStringSubmatch(out)
		if mm == nil {
			t.Fatalf("vafs compact printed %q, want \"compacted N segments, moved M blocks, freed B bytes\"", out)
		}
		t.Logf("vafs compact: %s", strings.TrimSpace(out))
		f, _ := strconv.ParseUint(mm[3], 10, 64)
		freed += f
		if f == 0 {
			break
		}
	}
	u = vafsDf(t, mnt)
	t.Logf("df after compaction: %+v (compaction freed %d bytes in all)", u, freed)
	umountCLI(t, m)
	du := duApparent(t, data)
	segs := duApparent(t, filepath.Join(data, "segments"))
	t.Logf("data dir after compaction and umount: %d bytes (%.3f GiB; segments %d bytes); 2 GiB live", du, float64(du)/GiB, segs)
	if !within(uint64(du), 2*GiB, 2*GiB*15/100) {
		t.Errorf("data dir holds %d bytes (%.2f GiB) for 2 GiB of live data, want within 15%%", du, float64(du)/GiB)
	}
	m = startMount(t, data, mnt) // b is verified at the end, after more compaction
	if _, err := os.Stat(a); !os.IsNotExist(err) {
		t.Errorf("the deleted original after remount: %v", err)
	}

	// Above, deleting the original left whole segments dead, which needs no
	// compaction. Now segments that are two-thirds dead: 384 MiB written, then
	// 2 of every 3 MiB overwritten. Only compaction brings the data dir back to
	// ~384 MiB more than before (without it: 640 MiB more).
	const cSize = 384 * MiB
	c := m.Path("c.raw")
	f, err := os.OpenFile(c, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < cSize; off += MiB {
		writeAt(t, f, pattern(MiB, 11, off), off)
	}
	fsync(t, f)
	for off := int64(0); off < cSize; off += MiB {
		if off/MiB%3 != 2 {
			writeAt(t, f, pattern(MiB, 12, off), off)
		}
	}
	fsync(t, f)
	f.Close()
	wantC := func(off int64) []byte {
		if off/MiB%3 != 2 {
			return pattern(MiB, 12, off)
		}
		return pattern(MiB, 11, off)
	}
	before := vafsDf(t, mnt)
	t.Logf("df with c.raw two-thirds overwritten: %+v", before)
	if !within(before.Physical, 2*GiB+cSize, 4*MiB) {
		t.Errorf("df physical %d, want 2 GiB + 384 MiB", before.Physical)
	}
	freed = 0
	for i := 0; i < 8; i++ { // a pass may do part of the work: repeat until one frees nothing
		out := mustVafs(t, "compact", mnt)
		mm := compactLine.FindStringSubmatch(out)
		if mm == nil {
			t.Fatalf("vafs compact printed %q", out)
		}
		t.Logf("vafs compact: %s", strings.TrimSpace(out))
		f, _ := strconv.ParseUint(mm[3], 10, 64)
		freed += f
		if f == 0 {
			break
		}
	}
	after := vafsDf(t, mnt)
	t.Logf("df after compaction: %+v (freed %d bytes; the mount's own 30 s pass may have run too)", after, freed)
	if after.Physical != before.Physical || after.Logical != before.Logical {
		t.Errorf("compaction changed physical or logical: %+v -> %+v", before, after)
	}
	umountCLI(t, m)
	du2 := duApparent(t, data)
	grew := du2 - du
	t.Logf("data dir: %d bytes before c.raw, %d after writing 384 MiB + overwriting 256 MiB of it and compacting (+%.1f MiB)", du, du2, float64(grew)/MiB)
	if grew > cSize+96*MiB {
		t.Errorf("the data dir grew by %.1f MiB for 384 MiB of live data, want < 480 MiB: compaction did not reclaim the two-thirds-dead segments", float64(grew)/MiB)
	}
	m = startMount(t, data, mnt)
	for off := int64(0); off < cSize; off += MiB {
		got := readRange(t, c, off, MiB, true)
		if !bytes.Equal(got, wantC(off)) {
			expectBytes(t, fmt.Sprintf("c.raw at MiB %d after compaction and remount", off/MiB), got, wantC(off))
			break
		}
	}
	fioVerify(t, b, "2g", 2)
	m.Stop()
	checkFsck(t, data)
}
