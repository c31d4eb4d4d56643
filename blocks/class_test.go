package blocks_test

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/vafs/vafs/blocks"
)

// Two classes open at once on a power-cut store, appends interleaved
// (segments rolling in each), Syncs between: after a power cut (dropping
// what was not synced, or keeping any torn subset of it) and a reopen,
// every segment's class reads back from its header, every synced record
// of either class reads back exactly, and an unsynced one reads right or
// fails its checksum. Segments never mix classes. After the reopen each
// class starts a segment of its own: the segments open at the cut are
// never appended to again (docs/format.md, "Placement classes").
//
// A Sync that skipped one class's open segment loses that class's synced
// records in the cut, so this test fails without it.
//
// VAFS_POWERCUT_SEEDS=n runs n seeds (default 5).
func TestLogTwoClassesSurvivePowerCut(t *testing.T) {
	seeds := uint64(5)
	if v, err := strconv.ParseUint(os.Getenv("VAFS_POWERCUT_SEEDS"), 10, 64); err == nil && v > 0 {
		seeds = v
	}
	classes := []blocks.Class{blocks.ClassReplicated, blocks.ClassLocal}
	cfg := blocks.LogConfig{Host: 3, SegmentBlocks: 700}
	type app struct {
		class blocks.Class
		exts  []blocks.Extent
		data  []byte
	}
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			for seed := range seeds {
				s := blocks.NewPowerCutStore(direct)
				l, err := blocks.OpenLog(s, cfg)
				if err != nil {
					t.Fatal(err)
				}
				var synced, unsynced []app
				classOf := map[blocks.SegmentID]blocks.Class{}
				last := map[blocks.Class]blocks.SegmentID{}
				var persisted uint64
				blk := [2]uint64{}
				for i := range 24 {
					k := int(seed+uint64(i)*7) % 3 % 2 // an uneven interleaving, different per seed
					c := classes[k]
					n := 1 + (int(seed)*37+i*53)%150
					data := cheapPattern(n, uint64(i)<<32|seed)
					exts, err := l.Append(c, uint64(10+k), blk[k], data)
					if err != nil {
						t.Fatal(err)
					}
					blk[k] += uint64(n)
					for _, e := range exts {
						if had, ok := classOf[e.Seg]; ok && had != c {
							t.Fatalf("segment %s holds blocks of %s and %s", e.Seg, had, c)
						}
						classOf[e.Seg] = c
						last[c] = e.Seg
						if got, err := l.SegmentClass(e.Seg); err != nil || got != c {
							t.Fatalf("segment %s: class %s, %v; appended as %s", e.Seg, got, err, c)
						}
					}
					unsynced = append(unsynced, app{c, exts, data})
					if i%4 == 3 && i < 20 {
						persisted = l.NextSeq() // as a commit does, before its Sync
						if err := l.Sync(); err != nil {
							t.Fatal(err)
						}
						synced, unsynced = append(synced, unsynced...), nil
					}
				}
				// Both classes have an open segment now: where each appended last.
				open := map[blocks.SegmentID]bool{}
				for _, c := range classes {
					if !l.IsOpen(last[c]) {
						t.Fatalf("%s's last segment %s is not open", c, last[c])
					}
					open[last[c]] = true
				}
				if len(open) != 2 {
					t.Fatalf("seed %d: %d open segments, want one per class", seed, len(open))
				}
				for _, cut := range []*blocks.PowerCutStore{s.Crash(), s.CrashRandom(seed)} {
					cfg2 := cfg
					cfg2.NextSeq = persisted
					l2, err := blocks.OpenLog(cut, cfg2)
					if err != nil {
						t.Fatal(err)
					}
					had := map[blocks.SegmentID]bool{}
					ids, _ := cut.List()
					for _, id := range ids {
						had[id] = true
					}
					for _, a := range synced {
						for _, e := range a.exts {
							// l2 created none of these: the class comes from the header.
							if got, err := l2.SegmentClass(e.Seg); err != nil || got != a.class {
								t.Fatalf("seed %d: segment %s reads as %s (%v) after the cut, written as %s", seed, e.Seg, got, err, a.class)
							}
						}
						if got := readExtents(t, l2, a.exts); !bytes.Equal(got, a.data) {
							t.Fatalf("seed %d: a synced %s append reads back different after the cut", seed, a.class)
						}
					}
					for _, a := range unsynced {
						off := 0
						for _, e := range a.exts {
							buf := make([]byte, int(e.N)*blocks.BlockSize)
							if err := l2.Read(e, buf); err == nil && !bytes.Equal(buf, a.data[off:off+len(buf)]) {
								t.Fatalf("seed %d: an unsynced record read back wrong data without an error", seed)
							}
							off += len(buf)
						}
					}
					// Recovery: each class appends to a new segment of its
					// own (an id no segment in the store or any commit has);
					// the segments open at the cut stay as they are.
					for _, c := range classes {
						data := cheapPattern(3, uint64(c)<<8|seed)
						exts, err := l2.Append(c, 99, 0, data)
						if err != nil {
							t.Fatal(err)
						}
						for _, e := range exts {
							if had[e.Seg] || e.Seg.Seq() < persisted || e.Index != 0 {
								t.Fatalf("seed %d: after the cut %s appended to segment %s at %d, not a new one", seed, c, e.Seg, e.Index)
							}
							if got, err := l2.SegmentClass(e.Seg); err != nil || got != c {
								t.Fatalf("new segment %s: class %s, %v; want %s", e.Seg, got, err, c)
							}
						}
						for id := range open {
							// (A segment whose name the cut lost may have its id
							// reused: no commit can refer to it.)
							if had[id] && l2.IsOpen(id) {
								t.Fatalf("segment %s, open at the cut, is open again", id)
							}
						}
					}
					if err := l2.Sync(); err != nil {
						t.Fatal(err)
					}
					l2.Close()
				}
				l.Close()
			}
		})
	}
}

// One Sync covers the open segment of every class, each with its own
// fdatasync, and a Sync with nothing new appended syncs nothing.
func TestLogSyncCoversEveryClass(t *testing.T) {
	s := blocks.NewPowerCutStore(true)
	l, err := blocks.OpenLog(s, blocks.LogConfig{Host: 1, SegmentBlocks: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var all [][]blocks.Extent
	for i, c := range []blocks.Class{blocks.ClassLocal, blocks.ClassReplicated, blocks.ClassWriteback, blocks.ClassLocal} {
		exts, err := l.Append(c, 1, uint64(i), pattern(1, byte(i)))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, exts)
	}
	before := s.Syncs()
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := s.Syncs() - before; got != 3 {
		t.Fatalf("Sync of three open segments made %d file syncs, want 3", got)
	}
	before = s.Syncs()
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := s.Syncs() - before; got != 0 {
		t.Fatalf("a Sync with nothing appended made %d file syncs", got)
	}
	if all[0][0].Seg != all[3][0].Seg || all[0][0].Seg == all[1][0].Seg {
		t.Fatalf("appends of one class went to %s and %s; the other class to %s", all[0][0].Seg, all[3][0].Seg, all[1][0].Seg)
	}
	cut := s.Crash()
	l2, err := blocks.OpenLog(cut, blocks.LogConfig{Host: 1, SegmentBlocks: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	for i, exts := range all {
		if got := readExtents(t, l2, exts); !bytes.Equal(got, pattern(1, byte(i))) {
			t.Fatalf("append %d reads back different after the cut", i)
		}
	}
	if _, err := l.Append(blocks.NumClasses, 1, 0, pattern(1, 0)); err == nil {
		t.Fatal("an append to an unknown class succeeded")
	}
}
