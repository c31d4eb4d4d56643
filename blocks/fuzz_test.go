package blocks

// Fuzz targets for the segment header and record decoders (docs/format.md,
// "Segments"). Arbitrary input either fails (a record with a
// *CorruptError that names the segment and index asked for) or decodes to
// a value the package's own encoder writes back byte for byte; a value
// built from the fuzzer's input survives encode + decode; decoding
// allocates nothing in proportion to what the input claims. `go test` runs
// them on their seeds and on testdata/fuzz/<FuzzName>/; `just fuzz` runs
// each for a while.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"runtime/metrics"
	"testing"
)

func allocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// checkAlloc fails if decode allocates more than slack for the allocator's
// bookkeeping: neither decoder needs a buffer of its own.
func checkAlloc(t *testing.T, decode func()) {
	t.Helper()
	before := allocated()
	decode()
	if a := allocated() - before; a > 1<<20 {
		t.Fatalf("decoding allocated %d bytes", a)
	}
}

func FuzzSegHeader(f *testing.F) {
	for _, id := range []SegmentID{MakeSegmentID(1, 1), MakeSegmentID(0xabcdef, 1<<40-1), 0, 1<<64 - 1} {
		for _, c := range []Class{ClassReplicated, ClassLocal} {
			h := encodeSegHeader(id, c)
			f.Add(h, uint64(id), uint8(c), false)
			f.Add(h[:32], uint64(id), uint8(c), false)
			f.Add(h[:31], uint64(id), uint8(c), false)
			for _, i := range []int{0, 8, 9, 15, 16, 24, 28, 31, 32, SegHeaderSize - 1} {
				c2 := bytes.Clone(h)
				c2[i] ^= 1
				f.Add(c2, uint64(id), uint8(c), i != 28)
			}
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, id uint64, class uint8, fix bool) {
		b := bytes.Clone(in)
		if fix && len(b) >= 32 { // reach the checks after the checksum
			binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(b[:28], castagnoli))
		}
		var got SegmentID
		var gotClass Class
		var err error
		checkAlloc(t, func() { got, gotClass, err = DecodeSegHeader(b) })
		// The fields docs/format.md defines: magic, version and class
		// (0..9), id and record size (16..27). The checksum also covers
		// 10..15.
		defined := func(h []byte) []byte { return append(bytes.Clone(h[:10]), h[16:28]...) }
		if err == nil {
			if enc := encodeSegHeader(got, gotClass); !bytes.Equal(defined(b), defined(enc)) {
				t.Fatalf("%x decoded as segment %s class %s, which encodes as %x", b[:32], got, gotClass, enc[:32])
			}
		} else if len(b) >= 32 && Class(b[9]) < NumClasses &&
			bytes.Equal(b[:32], encodeSegHeader(SegmentID(binary.LittleEndian.Uint64(b[16:])), Class(b[9]))[:32]) {
			t.Fatalf("refused a header as its encoder writes it: %v", err)
		}
		if err == nil && b[9] >= NumClasses {
			t.Fatalf("accepted unknown class %d", b[9])
		}

		c := Class(class % NumClasses)
		h := encodeSegHeader(SegmentID(id), c)
		if got, gotClass, err := DecodeSegHeader(h); err != nil || got != SegmentID(id) || gotClass != c {
			t.Fatalf("segment %016x class %s: decoded %s %s, %v", id, c, got, gotClass, err)
		}
		if _, _, err := DecodeSegHeader(h[:31]); !errors.Is(err, ErrChecksum) {
			t.Fatalf("a short header: %v", err)
		}
	})
}

// A segment written before classes existed (byte 9 zero: the encoder of
// that time) reads as the default class; a class this vafs does not know
// is refused, never read as another.
func TestSegHeaderClassCompat(t *testing.T) {
	old := make([]byte, SegHeaderSize) // the version-1 header as vafs wrote it before classes
	copy(old, segMagic)
	old[8] = 1
	binary.LittleEndian.PutUint64(old[16:], uint64(MakeSegmentID(7, 9)))
	binary.LittleEndian.PutUint32(old[24:], RecordSize)
	binary.LittleEndian.PutUint32(old[28:], crc32.Checksum(old[:28], castagnoli))
	if id, c, err := DecodeSegHeader(old); err != nil || id != MakeSegmentID(7, 9) || c != ClassReplicated {
		t.Fatalf("a pre-class header: %s %s %v, want the id, replicated", id, c, err)
	}
	if !bytes.Equal(old, encodeSegHeader(MakeSegmentID(7, 9), ClassReplicated)) {
		t.Fatal("the default class no longer encodes as the pre-class header")
	}
	h := encodeSegHeader(MakeSegmentID(7, 9), ClassLocal)
	h[9] = NumClasses
	binary.LittleEndian.PutUint32(h[28:], crc32.Checksum(h[:28], castagnoli))
	if _, _, err := DecodeSegHeader(h); err == nil || errors.Is(err, ErrChecksum) {
		t.Fatalf("unknown class %d: %v, want an unsupported-class error", NumClasses, err)
	}
}

// record returns a record as the log writes it.
func record(seg SegmentID, idx uint32, tag Tag, data []byte) []byte {
	rec := make([]byte, RecordSize)
	encodeRecord(rec, seg, idx, tag, data)
	return rec
}

// fixCRC sets the checksum of a record-sized input so that the checks after
// it (magic, version, flags, placement) are reached.
func fixCRC(rec []byte) {
	c := crc32.Update(0, castagnoli, rec[4:RecordHeaderSize])
	c = crc32.Update(c, castagnoli, rec[RecordHeaderSize:RecordSize])
	binary.LittleEndian.PutUint32(rec, c)
}

func FuzzRecord(f *testing.F) {
	data := bytes.Repeat([]byte("vafs fuzz "), BlockSize/10+1)[:BlockSize]
	seg := MakeSegmentID(0xabcdef, 7)
	rec := record(seg, 5, Tag{Volume: 2, Block: 1 << 30}, data)
	f.Add(rec, uint64(seg), uint32(5), uint64(2), uint64(1<<30), false)
	f.Add(rec, uint64(seg), uint32(6), uint64(0), uint64(0), true)   // misplaced
	f.Add(rec, uint64(seg+1), uint32(5), uint64(0), uint64(0), true) // misdirected
	f.Add(rec[:RecordSize-1], uint64(seg), uint32(5), uint64(0), uint64(0), true)
	f.Add(append(bytes.Clone(rec), 1, 2, 3), uint64(seg), uint32(5), uint64(0), uint64(0), false) // a read buffer holds more
	for _, i := range []int{0, 4, 5, 8, 16, 24, 32, RecordHeaderSize, RecordSize - 1} {
		c := bytes.Clone(rec)
		c[i] ^= 1
		f.Add(c, uint64(seg), uint32(5), uint64(0), uint64(0), i >= 4)
	}
	zero := record(MakeSegmentID(1, 1), 1<<32-1, Tag{Volume: 1<<64 - 1, Block: 1<<64 - 1}, make([]byte, BlockSize))
	f.Add(zero, uint64(MakeSegmentID(1, 1)), uint32(1<<32-1), uint64(1<<64-1), uint64(1<<64-1), false)
	f.Add(make([]byte, RecordSize), uint64(0), uint32(0), uint64(0), uint64(0), false) // bytes past the last record read as zeros

	f.Fuzz(func(t *testing.T, in []byte, segID uint64, idx uint32, vol, block uint64, fix bool) {
		seg := SegmentID(segID)
		rec := bytes.Clone(in)
		if fix && len(rec) >= RecordSize {
			fixCRC(rec)
		}
		var got []byte
		var tag Tag
		var err error
		checkAlloc(t, func() { got, tag, err = DecodeRecord(rec, seg, idx) })
		if err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrChecksum) || ce.Seg != seg || ce.Index != idx {
				t.Fatalf("error %v (%T) does not name segment %s index %d", err, err, seg, idx)
			}
		} else {
			// Only what the log writes decodes: the same record, byte for byte.
			if len(got) != BlockSize || &got[0] != &rec[RecordHeaderSize] {
				t.Fatalf("data is %d bytes, not the record's block", len(got))
			}
			if again := record(seg, idx, tag, got); !bytes.Equal(again, rec[:RecordSize]) {
				t.Fatalf("decoded segment %s index %d tag %+v, which encodes to a different header %x, read %x",
					seg, idx, tag, again[:RecordHeaderSize], rec[:RecordHeaderSize])
			}
		}

		// A block written for (vol, block) reads back as written, with its
		// tag, at its own place only.
		blk := make([]byte, BlockSize)
		copy(blk, in)
		want := Tag{Volume: vol, Block: block}
		enc := record(seg, idx, want, blk)
		d, gt, err := DecodeRecord(enc, seg, idx)
		if err != nil || gt != want || !bytes.Equal(d, blk) {
			t.Fatalf("round trip of segment %s index %d tag %+v: tag %+v, same data %v, %v", seg, idx, want, gt, bytes.Equal(d, blk), err)
		}
		if _, _, err := DecodeRecord(enc, seg, idx+1); !errors.Is(err, ErrChecksum) {
			t.Fatalf("record read at the next index: %v", err)
		}
		if _, _, err := DecodeRecord(enc, seg^1, idx); !errors.Is(err, ErrChecksum) {
			t.Fatalf("record read from another segment: %v", err)
		}
		if _, _, err := DecodeRecord(enc[:RecordSize-1], seg, idx); !errors.Is(err, ErrChecksum) {
			t.Fatalf("short record: %v", err)
		}
	})
}
