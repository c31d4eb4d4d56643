package meta

import (
	"encoding/binary"
	"fmt"

	"github.com/vafs/vafs/internal/msgpackcheck"
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
// (an inode, a head, a snapshot), after msgpackcheck.Check: msgpack trusts every
// length until the input runs out, so a corrupt length in a few bytes
// made it allocate a MiB, and its pooled decoder kept the grown buffer, so
// each further read of the same record allocated and copied a MiB more.
func decodeRecord(b []byte, version byte, v any) error {
	if len(b) > 0 && b[0] == version {
		if err := msgpackcheck.Check(b[1:]); err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
	return decodeVersioned(b, version, v)
}
