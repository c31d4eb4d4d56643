package meta

import "encoding/binary"

// Pebble key layout (docs/format.md). Integers are big endian so that keys
// sort numerically. Every value carries a version byte.
//
//	"S"                         superblock
//	"i" ino                     inode attributes
//	"d" parent name             directory entry -> child ino, type
//	"x" ino name                xattr value
//	"o" ino                     orphan: unlinked while open, reclaimed at mount
//	"h" ino                     volume head: root, height, gen, size, blocks
//	"n" node                    tree node
//	"c" node                    node reference count when it is not 1
//	"g" segment                 live block references into a segment
//	"p" ino name                snapshot of a volume (next issue)
//	"J" ino seq                 fsync journal record: blocks of a volume not yet in its tree
const (
	pfxSuper   = 'S'
	pfxInode   = 'i'
	pfxDirent  = 'd'
	pfxXattr   = 'x'
	pfxOrphan  = 'o'
	pfxHead    = 'h'
	pfxNode    = 'n'
	pfxRef     = 'c'
	pfxSegment = 'g'
	pfxSnap    = 'p'
	pfxJournal = 'J'
)

func key64(p byte, v uint64) []byte {
	k := make([]byte, 9)
	k[0] = p
	binary.BigEndian.PutUint64(k[1:], v)
	return k
}

func key64s(p byte, v uint64, s string) []byte {
	k := make([]byte, 9+len(s))
	k[0] = p
	binary.BigEndian.PutUint64(k[1:], v)
	copy(k[9:], s)
	return k
}

// prefixEnd returns the first key after every key starting with p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}
