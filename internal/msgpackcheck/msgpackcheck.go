// Package msgpackcheck bounds what decoding a msgpack value can cost
// before msgpack decodes it. msgpack trusts a length until the input runs
// out: it allocates a slice of as many elements as an array header claims,
// whatever follows (5 bytes claiming 2^28 snapshots took the control
// socket's client to out of memory; a 7-byte record claiming an 808 MB
// string grew a pooled buffer by 1 MiB per read), and it decodes and skips
// nested values recursively (~250 bytes of stack a level). Both meta's
// records and the control socket's frames (fs/control/wire) are checked
// here first; meta must not import fs, so the check lives below both.
package msgpackcheck

import (
	"fmt"
	"io"
)

// MaxDepth is how deep arrays and maps may nest (a snapshot record, with
// its head, nests 2; the deepest control message, describe's result, 3).
const MaxDepth = 16

// Check verifies that b is exactly one well-formed msgpack value whose
// arrays and maps nest at most MaxDepth deep and whose every length and
// count fits in the bytes that follow it (each element of an array or map
// takes at least a byte). Then msgpack allocates O(len(b)) and recurses at
// most MaxDepth deep.
func Check(b []byte) error {
	var left [MaxDepth + 1]uint64 // values still to read in each open container; 0 is the value
	d, p := 0, 0
	left[0] = 1
	for {
		for left[d] == 0 {
			if d == 0 {
				if p != len(b) {
					return fmt.Errorf("%d bytes after the value", len(b)-p)
				}
				return nil
			}
			d--
		}
		left[d]--
		if p >= len(b) {
			return io.ErrUnexpectedEOF
		}
		c := b[p]
		p++
		var size, items uint64 // payload bytes; values inside (an array's or map's)
		switch {
		case c <= 0x7f || c >= 0xe0: // fixint
		case c <= 0x8f:
			items = 2 * uint64(c&0x0f) // fixmap
		case c <= 0x9f:
			items = uint64(c & 0x0f) // fixarray
		case c <= 0xbf:
			size = uint64(c & 0x1f) // fixstr
		case c == 0xc0 || c == 0xc2 || c == 0xc3: // nil, false, true
		case c == 0xc1:
			return fmt.Errorf("byte 0xc1 at %d", p-1)
		case c == 0xcc || c == 0xd0:
			size = 1
		case c == 0xcd || c == 0xd1:
			size = 2
		case c == 0xca || c == 0xce || c == 0xd2:
			size = 4
		case c == 0xcb || c == 0xcf || c == 0xd3:
			size = 8
		case c >= 0xd4 && c <= 0xd8:
			size = 1 + 1<<(c-0xd4) // fixext: type, 1 to 16 bytes
		default: // a 1, 2 or 4 byte length follows
			w := 4
			switch c {
			case 0xc4, 0xc7, 0xd9:
				w = 1
			case 0xc5, 0xc8, 0xda, 0xdc, 0xde:
				w = 2
			}
			if len(b)-p < w {
				return io.ErrUnexpectedEOF
			}
			var n uint64
			for _, x := range b[p : p+w] {
				n = n<<8 | uint64(x)
			}
			p += w
			switch c {
			case 0xc7, 0xc8, 0xc9:
				size = n + 1 // ext: type, n bytes
			case 0xdc, 0xdd:
				items = n
			case 0xde, 0xdf:
				items = 2 * n
			default:
				size = n // bin, str
			}
		}
		if size > uint64(len(b)-p) {
			return fmt.Errorf("a value claims %d bytes, %d are left", size, len(b)-p)
		}
		p += int(size)
		if items > 0 {
			if items > uint64(len(b)-p) {
				return fmt.Errorf("a container claims %d values, %d bytes are left", items, len(b)-p)
			}
			if d == MaxDepth {
				return fmt.Errorf("nested deeper than %d", MaxDepth)
			}
			d++
			left[d] = items
		}
	}
}
