package blocks_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/vafs/vafs/blocks"
)

func pattern(n int, seed byte) []byte {
	b := make([]byte, n*blocks.BlockSize)
	for i := range b {
		b[i] = seed + byte(i/blocks.BlockSize)*7 + byte(i%251)
	}
	return b
}

func TestLogAppendReadAcrossSegments(t *testing.T) {
	s := blocks.NewMemStore()
	l, err := blocks.OpenLog(s, blocks.LogConfig{Host: 5, SegmentBlocks: 4})
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(10, 1)
	exts, err := l.Append(blocks.ClassReplicated, 9, 100, data)
	if err != nil {
		t.Fatal(err)
	}
	if len(exts) != 3 || exts[0].N != 4 || exts[1].N != 4 || exts[2].N != 2 {
		t.Fatalf("extents %+v; want runs of 4,4,2", exts)
	}
	if exts[0].Seg.Host() != 5 || exts[0].Seg == exts[1].Seg {
		t.Fatalf("segment ids %v %v", exts[0].Seg, exts[1].Seg)
	}
	var got []byte
	for _, e := range exts {
		buf := make([]byte, int(e.N)*blocks.BlockSize)
		if err := l.Read(e, buf); err != nil {
			t.Fatal(err)
		}
		got = append(got, buf...)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("read back differs")
	}
	_, tag, err := l.ReadRecord(exts[1].Seg, 1)
	if err != nil || tag.Volume != 9 || tag.Block != 105 {
		t.Fatalf("tag %+v err %v; want volume 9 block 105", tag, err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	// A reopened log never reuses a sequence number.
	l.Close()
	l2, err := blocks.OpenLog(s, blocks.LogConfig{Host: 5, SegmentBlocks: 4})
	if err != nil {
		t.Fatal(err)
	}
	e2, err := l2.Append(blocks.ClassReplicated, 1, 0, pattern(1, 3))
	if err != nil {
		t.Fatal(err)
	}
	if e2[0].Seg.Seq() <= exts[2].Seg.Seq() {
		t.Fatalf("reopened log reused seq %d", e2[0].Seg.Seq())
	}
}

func TestLogCorruptionIsAnError(t *testing.T) {
	s := blocks.NewMemStore()
	l, _ := blocks.OpenLog(s, blocks.LogConfig{Host: 1})
	exts, err := l.Append(blocks.ClassReplicated, 3, 0, pattern(3, 9))
	if err != nil {
		t.Fatal(err)
	}
	e := exts[0]
	// Flip a data byte of record 1.
	s.Corrupt(e.Seg, blocks.RecordOffset(e.Index+1)+blocks.RecordHeaderSize+17)
	buf := make([]byte, 3*blocks.BlockSize)
	err = l.Read(e, buf)
	var ce *blocks.CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, blocks.ErrChecksum) {
		t.Fatalf("read of corrupt block: %v; want CorruptError", err)
	}
	if ce.Seg != e.Seg || ce.Index != e.Index+1 || ce.Volume != 3 || ce.Block != 1 {
		t.Fatalf("corrupt error names %+v", ce)
	}
	// The healthy first record still reads.
	if err := l.Read(blocks.Extent{Seg: e.Seg, Index: e.Index, N: 1}, buf[:blocks.BlockSize]); err != nil {
		t.Fatal(err)
	}
	// Reading past what was written is corruption, not zeros.
	if err := l.Read(blocks.Extent{Seg: e.Seg, Index: 50, N: 1}, buf[:blocks.BlockSize]); !errors.Is(err, blocks.ErrChecksum) {
		t.Fatalf("read past end: %v", err)
	}
}

func TestLogNoSpace(t *testing.T) {
	s := blocks.NewMemStore()
	s.Capacity = 40 << 20 // reserve is 16 MiB
	l, _ := blocks.OpenLog(s, blocks.LogConfig{Host: 1})
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = l.Append(blocks.ClassReplicated, 1, uint64(i*256), pattern(256, 1))
	}
	if !errors.Is(err, blocks.ErrNoSpace) {
		t.Fatalf("filling the store: %v; want ErrNoSpace", err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	s := blocks.NewMemStore()
	l, _ := blocks.OpenLog(s, blocks.LogConfig{Host: 1})
	exts, _ := l.Append(blocks.ClassReplicated, 1, 2, pattern(1, 4))
	rec := make([]byte, blocks.RecordSize)
	seg, _ := s.Open(exts[0].Seg)
	seg.ReadAt(rec, blocks.RecordOffset(0))
	f.Add(rec, uint64(exts[0].Seg), uint32(0))
	f.Fuzz(func(t *testing.T, rec []byte, seg uint64, idx uint32) {
		data, _, err := blocks.DecodeRecord(rec, blocks.SegmentID(seg), idx)
		if err == nil && len(data) != blocks.BlockSize {
			t.Fatalf("decoded %d bytes", len(data))
		}
	})
}
