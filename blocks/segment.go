package blocks

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Segment layout (docs/format.md):
//
//	offset 0      segment header, SegHeaderSize bytes (magic, version, class, id)
//	offset 4096   record 0: RecordHeaderSize header + BlockSize data
//	...           record i at SegHeaderSize + i*RecordSize
//
// Records are never rewritten once a commit may reference them.
const (
	BlockSize        = 4096
	RecordHeaderSize = 40
	RecordSize       = RecordHeaderSize + BlockSize
	SegHeaderSize    = 4096
	SegmentVersion   = 1
	RecordVersion    = 1
	segMagic         = "VAFSSEG\x00"
	recMagic         = 0xB1 // first byte after the checksum
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SegmentID is globally unique: the host id in the top 24 bits, a per-host
// sequence number below.
type SegmentID uint64

const seqBits = 40

// MakeSegmentID composes a host id and a sequence number.
func MakeSegmentID(host uint32, seq uint64) SegmentID {
	return SegmentID(uint64(host&0xffffff)<<seqBits | seq&(1<<seqBits-1))
}

// Host returns the host part of the id.
func (id SegmentID) Host() uint32 { return uint32(uint64(id) >> seqBits) }

// Seq returns the sequence part of the id.
func (id SegmentID) Seq() uint64 { return uint64(id) & (1<<seqBits - 1) }

func (id SegmentID) String() string { return fmt.Sprintf("%016x", uint64(id)) }

// RecordOffset is where record idx starts in a segment.
func RecordOffset(idx uint32) int64 { return SegHeaderSize + int64(idx)*RecordSize }

// segHeaderUsed is how many bytes of the header carry fields; the rest of
// the SegHeaderSize bytes are zero.
const segHeaderUsed = 32

// encodeSegHeader fills the first SegHeaderSize bytes of a segment of
// class c. Byte 9 (the class) was written as 0 before classes existed, so
// those segments read as ClassReplicated (docs/format.md).
func encodeSegHeader(id SegmentID, c Class) []byte {
	b := make([]byte, SegHeaderSize)
	copy(b, segMagic)
	b[8] = SegmentVersion
	b[9] = byte(c)
	binary.LittleEndian.PutUint64(b[16:], uint64(id))
	binary.LittleEndian.PutUint32(b[24:], RecordSize)
	binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(b[:28], castagnoli))
	return b
}

// DecodeSegHeader checks a segment header and returns its id and class.
// A class this vafs does not know is refused, never read as another.
func DecodeSegHeader(b []byte) (SegmentID, Class, error) {
	if len(b) < segHeaderUsed || string(b[:8]) != segMagic {
		return 0, 0, fmt.Errorf("%w: bad segment magic", ErrChecksum)
	}
	if b[8] != SegmentVersion {
		return 0, 0, fmt.Errorf("blocks: unsupported segment version %d", b[8])
	}
	if crc32.Checksum(b[:28], castagnoli) != binary.LittleEndian.Uint32(b[28:]) {
		return 0, 0, fmt.Errorf("%w: segment header", ErrChecksum)
	}
	if binary.LittleEndian.Uint32(b[24:]) != RecordSize {
		return 0, 0, fmt.Errorf("blocks: unsupported record size %d", binary.LittleEndian.Uint32(b[24:]))
	}
	c := Class(b[9])
	if err := c.valid(); err != nil {
		return 0, 0, err
	}
	return SegmentID(binary.LittleEndian.Uint64(b[16:])), c, nil
}

// Tag says which volume and block a record was written for. It is kept in
// the record header for scrubbing and replay; reads do not require it to
// match, since a cloned volume reads blocks written for another.
type Tag struct {
	Volume uint64
	Block  uint64
}

// Header layout (little endian):
//
//	0  crc32c over bytes 4..40 of the header and the 4096 data bytes
//	4  magic 0xB1
//	5  record version
//	6  flags (0)
//	7  reserved (0)
//	8  index within the segment (uint32)
//	12 reserved (uint32, 0)
//	16 segment id
//	24 volume
//	32 block number
func encodeRecord(dst []byte, seg SegmentID, idx uint32, tag Tag, data []byte) {
	h := dst[:RecordHeaderSize]
	h[4] = recMagic
	h[5] = RecordVersion
	h[6], h[7] = 0, 0
	binary.LittleEndian.PutUint32(h[8:], idx)
	binary.LittleEndian.PutUint32(h[12:], 0)
	binary.LittleEndian.PutUint64(h[16:], uint64(seg))
	binary.LittleEndian.PutUint64(h[24:], tag.Volume)
	binary.LittleEndian.PutUint64(h[32:], tag.Block)
	copy(dst[RecordHeaderSize:RecordSize], data)
	c := crc32.Update(0, castagnoli, h[4:])
	c = crc32.Update(c, castagnoli, dst[RecordHeaderSize:RecordSize])
	binary.LittleEndian.PutUint32(h[0:], c)
}

// DecodeRecord verifies one record read from segment seg at index idx and
// returns its data (a subslice of rec) and tag.
func DecodeRecord(rec []byte, seg SegmentID, idx uint32) ([]byte, Tag, error) {
	if len(rec) < RecordSize {
		return nil, Tag{}, &CorruptError{Seg: seg, Index: idx, Reason: "short record"}
	}
	h := rec[:RecordHeaderSize]
	tag := Tag{Volume: binary.LittleEndian.Uint64(h[24:]), Block: binary.LittleEndian.Uint64(h[32:])}
	c := crc32.Update(0, castagnoli, h[4:])
	c = crc32.Update(c, castagnoli, rec[RecordHeaderSize:RecordSize])
	if c != binary.LittleEndian.Uint32(h[0:]) {
		return nil, tag, &CorruptError{Seg: seg, Index: idx, Volume: tag.Volume, Block: tag.Block, Reason: "crc32c"}
	}
	if h[4] != recMagic || h[5] != RecordVersion {
		return nil, tag, &CorruptError{Seg: seg, Index: idx, Volume: tag.Volume, Block: tag.Block, Reason: "bad record magic or version"}
	}
	// Version 1 writes 0 here: a record that says otherwise is not one
	// this reader knows (docs/format.md: refuse, never guess).
	if h[6] != 0 || h[7] != 0 || binary.LittleEndian.Uint32(h[12:]) != 0 {
		return nil, tag, &CorruptError{Seg: seg, Index: idx, Volume: tag.Volume, Block: tag.Block, Reason: "unknown record flags"}
	}
	if SegmentID(binary.LittleEndian.Uint64(h[16:])) != seg || binary.LittleEndian.Uint32(h[8:]) != idx {
		return nil, tag, &CorruptError{Seg: seg, Index: idx, Volume: tag.Volume, Block: tag.Block, Reason: "misplaced record"}
	}
	return rec[RecordHeaderSize:RecordSize], tag, nil
}
