package meta

import (
	"encoding/binary"
	"fmt"
)

// Tree geometry: every node has 512 slots. A leaf (level 0) maps 512
// consecutive blocks; a node at level L covers 512^(L+1) blocks.
const (
	FanoutBits  = 9
	Fanout      = 1 << FanoutBits
	MaxHeight   = 7 // 512^7 blocks: far beyond any volume (2^63 bytes)
	nodeVersion = 1
)

// extent maps n consecutive slots of a leaf, starting at slot, to n
// consecutive records of one segment starting at idx. Sparse: absent slots
// are holes.
type extent struct {
	slot uint16
	n    uint16
	seg  uint64
	idx  uint32
}

// child is a present slot of an internal node; blocks counts the mapped
// blocks below it, so subtree sizes are known without walking.
type child struct {
	slot   uint16
	id     uint64
	blocks uint64
}

// node is a tree node. Invariant: a node whose gen equals the head's gen is
// reachable only from that head and may be mutated in place; any other node
// may be shared and is copied on write (unless its refcount is 1, when it is
// adopted by bumping its gen).
type node struct {
	id    uint64
	level uint8
	gen   uint64
	ext   []extent // level 0, sorted by slot, non-overlapping
	kids  []child  // level > 0, sorted by slot
	dirty bool
}

func (n *node) blocks() uint64 {
	var s uint64
	if n.level == 0 {
		for _, e := range n.ext {
			s += uint64(e.n)
		}
		return s
	}
	for _, c := range n.kids {
		s += c.blocks
	}
	return s
}

func (n *node) empty() bool { return len(n.ext) == 0 && len(n.kids) == 0 }

// encodeNode: version, level, uvarint gen, uvarint count, then per entry
//
//	leaf:     uvarint slot-prevEnd, uvarint n-1, varint seg-prevSeg, varint idx-(prevIdx+prevN)
//	internal: uvarint slot-prevSlot, uvarint id, uvarint blocks
//
// Deltas keep a leaf of sequentially written blocks to a few bytes.
func encodeNode(n *node) []byte {
	cnt := len(n.ext) + len(n.kids)
	b := make([]byte, 0, 2+binary.MaxVarintLen64*2+cnt*12)
	b = append(b, nodeVersion, n.level)
	b = binary.AppendUvarint(b, n.gen)
	b = binary.AppendUvarint(b, uint64(cnt))
	if n.level == 0 {
		var prevEnd uint64
		var prevSeg, prevNext int64
		for _, e := range n.ext {
			b = binary.AppendUvarint(b, uint64(e.slot)-prevEnd)
			b = binary.AppendUvarint(b, uint64(e.n-1))
			b = binary.AppendVarint(b, int64(e.seg)-prevSeg)
			b = binary.AppendVarint(b, int64(e.idx)-prevNext)
			prevEnd = uint64(e.slot) + uint64(e.n)
			prevSeg, prevNext = int64(e.seg), int64(e.idx)+int64(e.n)
		}
		return b
	}
	var prev uint64
	for _, c := range n.kids {
		b = binary.AppendUvarint(b, uint64(c.slot)-prev)
		b = binary.AppendUvarint(b, c.id)
		b = binary.AppendUvarint(b, c.blocks)
		prev = uint64(c.slot)
	}
	return b
}

func decodeNode(id uint64, b []byte) (*node, error) {
	bad := func(why string) (*node, error) {
		return nil, fmt.Errorf("%w: node %d: %s", ErrCorrupt, id, why)
	}
	if len(b) < 2 {
		return bad("short")
	}
	if b[0] != nodeVersion {
		return bad(fmt.Sprintf("version %d", b[0]))
	}
	n := &node{id: id, level: b[1]}
	if n.level >= MaxHeight {
		return bad("level")
	}
	p := 2
	uv := func() (uint64, bool) {
		v, k := binary.Uvarint(b[p:])
		if k <= 0 {
			return 0, false
		}
		p += k
		return v, true
	}
	sv := func() (int64, bool) {
		v, k := binary.Varint(b[p:])
		if k <= 0 {
			return 0, false
		}
		p += k
		return v, true
	}
	var ok bool
	if n.gen, ok = uv(); !ok {
		return bad("gen")
	}
	// Every count and delta is bounded before it is used: a count before
	// make (at most Fanout entries, and no more than the bytes left, since
	// an entry takes at least one byte per field), a delta before it is
	// added (so no sum wraps around and every entry lands inside the node,
	// after the previous one).
	cnt, ok := uv()
	if !ok || cnt > Fanout || cnt > uint64(len(b)-p) {
		return bad("count")
	}
	if n.level == 0 {
		n.ext = make([]extent, 0, cnt)
		var prevEnd uint64
		var prevSeg, prevNext int64
		for i := uint64(0); i < cnt; i++ {
			ds, ok1 := uv()
			nm1, ok2 := uv()
			dseg, ok3 := sv()
			didx, ok4 := sv()
			if !ok1 || !ok2 || !ok3 || !ok4 {
				return bad("truncated extent")
			}
			if ds >= Fanout-prevEnd || nm1 >= Fanout-prevEnd-ds {
				return bad("extent out of range")
			}
			slot := prevEnd + ds
			cntb := nm1 + 1
			idx := prevNext + didx // prevNext <= 2^32: a sum that wraps is negative
			if idx < 0 || idx+int64(cntb) > 1<<32 {
				return bad("extent out of range")
			}
			e := extent{slot: uint16(slot), n: uint16(cntb), seg: uint64(prevSeg + dseg), idx: uint32(idx)}
			if e.seg == 0 {
				return bad("extent in segment 0") // Mapping.Seg 0 is a hole: it would read as zeros
			}
			n.ext = append(n.ext, e)
			prevEnd = slot + cntb
			prevSeg, prevNext = int64(e.seg), idx+int64(cntb)
		}
	} else {
		n.kids = make([]child, 0, cnt)
		below := span(int(n.level) - 1)
		var prev uint64
		for i := uint64(0); i < cnt; i++ {
			ds, ok1 := uv()
			cid, ok2 := uv()
			bl, ok3 := uv()
			if !ok1 || !ok2 || !ok3 {
				return bad("truncated child")
			}
			if ds >= Fanout-prev || (i > 0 && ds == 0) {
				return bad("child out of order")
			}
			slot := prev + ds
			if cid == 0 || cid == id {
				return bad("child id")
			}
			if bl == 0 || bl > below { // an empty subtree is removed, not kept
				return bad("child block count")
			}
			n.kids = append(n.kids, child{slot: uint16(slot), id: cid, blocks: bl})
			prev = slot
		}
	}
	if p != len(b) {
		return bad("trailing bytes")
	}
	return n, nil
}
