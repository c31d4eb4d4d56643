package meta

import (
	"encoding/binary"
	"fmt"
	"io"
)

const (
	inodeVersion  = 1
	direntVersion = 1
)

// Inode holds the attributes of a file, directory or symlink. For regular
// files (volumes) size and data times live in the volume head, which is
// committed with the data.
type Inode struct {
	Mode   uint32 `msgpack:"m"`
	Uid    uint32 `msgpack:"u"`
	Gid    uint32 `msgpack:"g"`
	Nlink  uint32 `msgpack:"n"`
	Rdev   uint32 `msgpack:"r,omitempty"`
	Size   uint64 `msgpack:"s,omitempty"` // directories and symlinks
	Atime  int64  `msgpack:"a"`
	Mtime  int64  `msgpack:"t"`
	Ctime  int64  `msgpack:"c"`
	Target string `msgpack:"l,omitempty"` // symlink target
	Parent uint64 `msgpack:"p,omitempty"` // directories: the parent, for rename loop checks
	Origin string `msgpack:"o,omitempty"` // what a clone was made from (describe's lineage)
}

// Dirent is a directory entry: the child's inode and its file type (the
// S_IFMT bits of its mode, so readdir needs no inode lookup).
type Dirent struct {
	Ino  uint64
	Type uint32
}

// DirEntry is a named Dirent, as listed.
type DirEntry struct {
	Name string
	Dirent
}

// GetInode reads an inode; ErrNotFound if absent.
func (d *DB) GetInode(ino uint64) (*Inode, error) {
	v, err := d.get(key64(pfxInode, ino))
	if err != nil {
		return nil, err
	}
	in := &Inode{}
	if err := decodeInode(v, in); err != nil {
		return nil, fmt.Errorf("inode %d: %w", ino, err)
	}
	return in, nil
}

func decodeInode(v []byte, in *Inode) error { return decodeRecord(v, inodeVersion, in) }

// PutInode writes an inode.
func (b *Batch) PutInode(ino uint64, in *Inode) {
	b.b.Set(key64(pfxInode, ino), encodeVersioned(inodeVersion, in), nil)
}

// DelInode deletes an inode and its xattrs.
func (b *Batch) DelInode(ino uint64) {
	b.b.Delete(key64(pfxInode, ino), nil)
	p := key64(pfxXattr, ino)
	b.b.DeleteRange(p, prefixEnd(p), nil)
}

func encodeDirent(e Dirent) []byte {
	v := make([]byte, 13)
	v[0] = direntVersion
	binary.BigEndian.PutUint64(v[1:], e.Ino)
	binary.BigEndian.PutUint32(v[9:], e.Type)
	return v
}

func decodeDirent(v []byte) (Dirent, error) {
	if len(v) != 13 || v[0] != direntVersion {
		return Dirent{}, fmt.Errorf("%w: dirent", ErrCorrupt)
	}
	return Dirent{Ino: binary.BigEndian.Uint64(v[1:]), Type: binary.BigEndian.Uint32(v[9:])}, nil
}

// GetDirent looks a name up in a directory; ErrNotFound if absent.
func (d *DB) GetDirent(parent uint64, name string) (Dirent, error) {
	v, err := d.get(key64s(pfxDirent, parent, name))
	if err != nil {
		return Dirent{}, err
	}
	return decodeDirent(v)
}

// PutDirent writes a directory entry.
func (b *Batch) PutDirent(parent uint64, name string, e Dirent) {
	b.b.Set(key64s(pfxDirent, parent, name), encodeDirent(e), nil)
}

// DelDirent deletes a directory entry.
func (b *Batch) DelDirent(parent uint64, name string) {
	b.b.Delete(key64s(pfxDirent, parent, name), nil)
}

// ListDir lists a directory in name order.
func (d *DB) ListDir(parent uint64) ([]DirEntry, error) {
	var out []DirEntry
	var derr error
	err := d.scan(key64(pfxDirent, parent), func(k, v []byte) bool {
		e, err := decodeDirent(v)
		if err != nil {
			derr = err
			return false
		}
		out = append(out, DirEntry{Name: string(k[9:]), Dirent: e})
		return true
	})
	if err == nil {
		err = derr
	}
	return out, err
}

// DirEmpty reports whether a directory has no entries.
func (d *DB) DirEmpty(parent uint64) (bool, error) {
	empty := true
	err := d.scan(key64(pfxDirent, parent), func(k, v []byte) bool {
		empty = false
		return false
	})
	return empty, err
}

// GetXattr reads an extended attribute; ErrNotFound if absent.
func (d *DB) GetXattr(ino uint64, name string) ([]byte, error) {
	return d.get(key64s(pfxXattr, ino, name))
}

// PutXattr writes an extended attribute.
func (b *Batch) PutXattr(ino uint64, name string, value []byte) {
	b.b.Set(key64s(pfxXattr, ino, name), value, nil)
}

// DelXattr removes an extended attribute.
func (b *Batch) DelXattr(ino uint64, name string) {
	b.b.Delete(key64s(pfxXattr, ino, name), nil)
}

// ListXattr lists the names of an inode's extended attributes.
func (d *DB) ListXattr(ino uint64) ([]string, error) {
	var names []string
	err := d.scan(key64(pfxXattr, ino), func(k, v []byte) bool {
		names = append(names, string(k[9:]))
		return true
	})
	return names, err
}

// PutOrphan records that ino was unlinked while open; DelOrphan clears it.
func (b *Batch) PutOrphan(ino uint64) { b.b.Set(key64(pfxOrphan, ino), []byte{1}, nil) }

// DelOrphan clears an orphan record.
func (b *Batch) DelOrphan(ino uint64) { b.b.Delete(key64(pfxOrphan, ino), nil) }

// Orphans lists the inodes recorded as orphans.
func (d *DB) Orphans() ([]uint64, error) {
	var out []uint64
	err := d.scan([]byte{pfxOrphan}, func(k, v []byte) bool {
		out = append(out, binary.BigEndian.Uint64(k[1:]))
		return true
	})
	return out, err
}

// decodeRecord is decodeVersioned for a msgpack record read from Pebble
// (an inode, a head, a snapshot), after checkMsgpack: msgpack trusts every
// length until the input runs out, so a corrupt length in a few bytes
// made it allocate a MiB, and its pooled decoder kept the grown buffer, so
// each further read of the same record allocated and copied a MiB more.
func decodeRecord(b []byte, version byte, v any) error {
	if len(b) > 0 && b[0] == version {
		if err := checkMsgpack(b[1:]); err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
	return decodeVersioned(b, version, v)
}

// msgpackMaxDepth is how deep arrays and maps may nest in a record (a
// snapshot, with its head, nests 2).
const msgpackMaxDepth = 16

// checkMsgpack verifies that b is exactly one well-formed msgpack value
// whose arrays and maps nest at most msgpackMaxDepth deep and whose every
// length and count fits in the bytes that follow it (each element of an
// array or map takes at least a byte). Then msgpack allocates O(len(b))
// and recurses at most msgpackMaxDepth deep (it decodes and skips nested
// values recursively, ~250 bytes of stack a level). The same check guards
// the control socket's frames (fs/control/wire, which meta must not import).
func checkMsgpack(b []byte) error {
	var left [msgpackMaxDepth + 1]uint64 // values still to read in each open container; 0 is the record
	d, p := 0, 0
	left[0] = 1
	for {
		for left[d] == 0 {
			if d == 0 {
				if p != len(b) {
					return fmt.Errorf("%d bytes after the record", len(b)-p)
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
			if d == msgpackMaxDepth {
				return fmt.Errorf("nested deeper than %d", msgpackMaxDepth)
			}
			d++
			left[d] = items
		}
	}
}
