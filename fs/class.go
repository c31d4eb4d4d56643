package fs

// Room "store" (doc.go, "Rooms"; see store.go).

import "github.com/vafs/vafs/blocks"

// Placement classes (docs/format.md, "Placement classes"): a volume's new
// blocks go to the open segment of the volume's class, and compaction
// copies a block into a segment of the class it was in, whatever volume
// maps it (a clone or copy_file_range may share a block across classes).

// volumeClass is the class volume ino's writes go to: the one place a
// volume's class is looked up. It is asked when blocks reach the log (for
// cached writes, when the write-back cache writes them out), so a change
// of class applies to what the cache still holds. Every volume is
// ClassReplicated until volumes get a tier attribute (DESIGN.md, layer 3);
// tests set Options.volumeClass to put volumes in other classes.
func (f *FS) volumeClass(ino uint64) blocks.Class {
	if f.opts.volumeClass != nil {
		return f.opts.volumeClass(ino)
	}
	return blocks.ClassReplicated
}
