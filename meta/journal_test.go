package meta

import (
	"bytes"
	"errors"
	"testing"
)

func journalSample() *JournalRecord {
	return &JournalRecord{Ino: 7, Seq: 3, Mtime: 1700000000123456789, Ctime: -5, Runs: []JournalRun{
		{First: 0, Data: bytes.Repeat([]byte{1}, journalBlock)},
		{First: 9, Data: bytes.Repeat([]byte{2}, 3*journalBlock)},
	}}
}

func sameJournal(a, b *JournalRecord) bool {
	if a.Mtime != b.Mtime || a.Ctime != b.Ctime || len(a.Runs) != len(b.Runs) {
		return false
	}
	for i := range a.Runs {
		if a.Runs[i].First != b.Runs[i].First || !bytes.Equal(a.Runs[i].Data, b.Runs[i].Data) {
			return false
		}
	}
	return true
}

// TestJournalRecords: records round-trip through Pebble in key order, a
// flipped byte anywhere is ErrCorrupt (never data), and DelJournal
// deletes exactly one.
func TestJournalRecords(t *testing.T) {
	db, err := OpenMem()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r := journalSample()
	r2 := &JournalRecord{Ino: 7, Seq: 4, Mtime: 1, Runs: nil}
	r3 := &JournalRecord{Ino: 2, Seq: 1, Mtime: 2, Runs: []JournalRun{{First: MaxBlocks - 1, Data: make([]byte, journalBlock)}}}
	for _, x := range []*JournalRecord{r2, r, r3} {
		if err := db.PutJournal(x); err != nil {
			t.Fatal(err)
		}
	}
	var got []*JournalRecord
	if err := db.Journal(func(x *JournalRecord) error { got = append(got, x); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []*JournalRecord{r3, r, r2} // by volume, then number
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Ino != want[i].Ino || got[i].Seq != want[i].Seq || !sameJournal(got[i], want[i]) {
			t.Fatalf("record %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	b := db.NewBatch()
	b.DelJournal(7, 3)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := db.Journal(func(x *JournalRecord) error {
		if x.Ino == 7 && x.Seq == 3 {
			t.Fatal("deleted record still there")
		}
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("%d records after deleting one of 3", n)
	}

	enc := EncodeJournal(r)
	for i := range enc {
		bad := bytes.Clone(enc)
		bad[i] ^= 0x10
		var x JournalRecord
		if err := DecodeJournal(bad, &x); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: %v, want ErrCorrupt", i, err)
		}
	}
	for _, n := range []int{0, 1, 4, len(enc) - 1} {
		var x JournalRecord
		if err := DecodeJournal(enc[:n], &x); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("cut to %d bytes: %v, want ErrCorrupt", n, err)
		}
	}
}

// FuzzJournalRecord: any value either fails with ErrCorrupt or decodes to
// a record that encodes back to the same bytes; a record built from the
// input round-trips.
func FuzzJournalRecord(f *testing.F) {
	f.Add(EncodeJournal(journalSample()), uint64(5), int64(1), uint8(2))
	f.Add(EncodeJournal(&JournalRecord{}), uint64(0), int64(0), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, first uint64, tm int64, n uint8) {
		var r JournalRecord
		before := allocated()
		err := DecodeJournal(b, &r)
		if a := allocated() - before; a > limit(len(b)) {
			t.Fatalf("decoding %d bytes allocated %d", len(b), a)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
		} else if !bytes.Equal(EncodeJournal(&r), b) {
			t.Fatal("decoded record does not encode back to its bytes")
		}
		w := &JournalRecord{Mtime: tm, Ctime: -tm}
		if n > 0 {
			w.Runs = []JournalRun{{First: first % (MaxBlocks - 256), Data: bytes.Repeat([]byte{n}, int(n)*journalBlock)}}
		}
		var g JournalRecord
		if err := DecodeJournal(EncodeJournal(w), &g); err != nil || !sameJournal(w, &g) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// TestSettled: a volume is settled when nothing but its times changed
// since its last landed flush.
func TestSettled(t *testing.T) {
	db, err := OpenMem()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tr, err := OpenTrees(db)
	if err != nil {
		t.Fatal(err)
	}
	const vol = 5
	land := func() *Flushed {
		b := db.NewBatch()
		fl := tr.Flush(b)
		if err := b.Commit(true); err != nil {
			t.Fatal(err)
		}
		return fl
	}
	must := func(want bool, what string) {
		t.Helper()
		if got := tr.Settled(vol); got != want {
			t.Fatalf("%s: settled %v, want %v", what, got, want)
		}
	}
	must(true, "never written")
	if err := tr.Map(vol, 0, 4, 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := tr.Extend(vol, 4*journalBlock, 41); err != nil {
		t.Fatal(err)
	}
	must(false, "after a map")
	b := db.NewBatch()
	fl := tr.Flush(b)
	must(false, "flushed, not landed")
	b.Close()
	tr.Unflush(fl)
	must(false, "after a failed commit")
	fl = land()
	must(false, "landed but not told")
	tr.Landed(fl)
	must(true, "landed")
	if err := tr.Extend(vol, 100, 42); err != nil {
		t.Fatal(err)
	}
	must(true, "a write within the size (times only)")
	if err := tr.SetTimes(vol, 43, 43); err != nil {
		t.Fatal(err)
	}
	must(true, "times set")
	if err := tr.Extend(vol, 1<<30, 44); err != nil {
		t.Fatal(err)
	}
	must(false, "extended")
	tr.Landed(land())
	must(true, "extension landed")
	if err := tr.Punch(vol, 0, 1); err != nil {
		t.Fatal(err)
	}
	must(false, "punched")
	tr.Landed(land())
	if err := tr.DeleteVolume(vol); err != nil {
		t.Fatal(err)
	}
	must(false, "deleted")
}
