package fs

// Room "cache" (doc.go, "Rooms"; see wcache.go).

import (
	"slices"

	"github.com/vafs/vafs/meta"
)

// The fsync journal: an fsync of a volume whose tree holds nothing
// uncommitted but its times (meta.Trees.Settled) writes the blocks the
// volume cached since its last record as one synced Pebble record
// (meta.PutJournal) and returns: one device flush (Pebble's WAL, recycled,
// already written) instead of a segment fdatasync and a synced metadata
// batch. The blocks stay cached and reach the log and the trees at the
// next flush of the volume, as without the journal. docs/write-cache.md
// "The fsync journal" has the crash argument; in short:
//
//   - After a crash the volume is its committed tree with the records left
//     applied in order (replayJournal). A record is written only while the
//     tree is settled, so committed tree + records holds every write
//     acknowledged by an fsync.
//   - A record is deleted in a commit's batch only when that batch's trees
//     hold every block of it, or a newer value: a flush of the volume that
//     began after the record's blocks were read out of the cache has
//     ended (covered), and the record is durable (landed).
//   - A commit that changes a volume's content otherwise than by writes
//     under the volume's writer lock (rollback: a commit with an fn) waits
//     for records in flight (jmu) and, its cache flushed under the state
//     lock, covers them all: no record ever outlives, undeleted, a
//     rollback it would undo.
//
// A record of a volume deleted since is never applied (its inode is gone:
// inode numbers are not reused) and is deleted at the next commit.

const (
	// journalMax bounds one record (1 MiB): an fsync after more writes
	// than this writes them to the log and commits instead.
	journalMax = 256
	// journalLiveMax bounds what a volume keeps in records not yet deleted
	// (4 MiB): beyond it an fsync writes the volume out and commits,
	// which deletes them. Records are data Pebble writes again if they
	// outlive a memtable (meta: 8 MiB); deleted within one, only their
	// tombstones reach an sstable.
	journalLiveMax = 1024
)

// jrec is a landed record: its number and how many blocks it holds.
type jrec struct {
	seq    uint64
	blocks int
}

// volJournal is a volume's journal state, under volCache.mu.
type volJournal struct {
	// track: written holds every block cached since the last record (or
	// since the last commit of the volume by fsync began, or since the
	// volume was first used). Off after a record would be too big, until
	// the next commit of the volume by fsync.
	track   bool
	written map[uint64]struct{}
	next    uint64 // number of the last record handed out (records are 1, 2, ...)
	covered uint64 // records numbered up to this are in the trees
	landed  []jrec // durable and not deleted, in order
	live    int    // blocks in landed
}

// jwrite notes blocks [first, first+n) cached. Caller holds c.mu.
func (c *volCache) jwrite(first uint64, n int) {
	j := &c.j
	if !j.track {
		return
	}
	if len(j.written)+n > journalMax {
		c.jstop()
		return
	}
	if j.written == nil {
		j.written = map[uint64]struct{}{}
	}
	for i := range n {
		j.written[first+uint64(i)] = struct{}{}
	}
}

// jstop stops tracking: blocks cached from now are in no record, so the
// next fsync commits the volume (and jrestart starts again). Caller holds
// c.mu.
func (c *volCache) jstop() { c.j.track, c.j.written = false, nil }

// jtracking reports whether the journal tracks the volume's writes (it
// stops when more was written since the last record than one holds).
func (c *volCache) jtracking() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.j.track
}

// jmark returns the number of the last record handed out: a flush of the
// volume that begins after it covers every record up to it.
func (c *volCache) jmark() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.j.next
}

// jcover notes that the trees hold every block of the records up to k.
func (c *volCache) jcover(k uint64) {
	c.mu.Lock()
	c.j.covered = max(c.j.covered, k)
	c.mu.Unlock()
}

// jrestart starts tracking afresh as a commit of the volume by fsync
// begins: every block cached so far is flushed by it. It returns a
// function that, if the commit fails, turns tracking off (the blocks it
// could not write are in no record).
func (c *volCache) jrestart() (failed func()) {
	c.mu.Lock()
	c.j.track, c.j.written = true, nil
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.jstop()
		c.mu.Unlock()
	}
}

// journalFsync makes the volume's writes durable with a journal record if
// it can: taken reports whether it did (or tried, and err says how that
// went); if not, the caller commits the volume.
func (f *FS) journalFsync(ino uint64, v *volume) (taken bool, err error) {
	if f.opts.NoFsyncJournal || !f.wc.on() {
		return false, nil
	}
	c := &v.c
	usable := func() bool {
		// While tracking, written holds at most journalMax blocks (jwrite).
		return c.j.track && c.j.live+len(c.j.written) <= journalLiveMax
	}
	c.mu.Lock()
	ok := usable()
	c.mu.Unlock()
	if !ok {
		return false, nil
	}
	v.wmu.Lock() // no write of the volume in flight, no flush step of it
	defer v.wmu.Unlock()
	f.jmu.RLock() // a rollback waits for the record (see above)
	defer f.jmu.RUnlock()
	f.state.RLock()
	if !f.trees.Settled(ino) {
		f.state.RUnlock()
		return false, nil
	}
	h, err := f.trees.Head(ino)
	if err != nil {
		f.state.RUnlock()
		return false, nil
	}
	c.mu.Lock()
	if !usable() {
		c.mu.Unlock()
		f.state.RUnlock()
		return false, nil
	}
	bs := make([]uint64, 0, len(c.j.written))
	for b := range c.j.written {
		bs = append(bs, b)
	}
	slices.Sort(bs)
	rec := &meta.JournalRecord{Ino: ino, Mtime: h.Mtime, Ctime: h.Ctime}
	nblocks := 0
	for i := 0; i < len(bs); {
		j := i + 1
		for j < len(bs) && bs[j] == bs[j-1]+1 {
			j++
		}
		data := make([]byte, (j-i)*BlockSize)
		filled := c.readLocked(f.wc, bs[i], data)
		// A block no longer cached left by a flush into the tree, which
		// would not be settled then; keep only what is cached.
		for k := 0; k < j-i; {
			if filled == nil || !filled[k] {
				k++
				continue
			}
			e := k + 1
			for e < j-i && filled[e] {
				e++
			}
			rec.Runs = append(rec.Runs, meta.JournalRun{First: bs[i] + uint64(k), Data: data[k*BlockSize : e*BlockSize]})
			nblocks += e - k
			k = e
		}
		i = j
	}
	c.j.next++
	rec.Seq = c.j.next
	c.j.written = nil
	c.mu.Unlock()
	f.state.RUnlock()

	f.jvmu.Lock()
	f.jvols[ino] = v
	f.jvmu.Unlock()
	if err := f.db.PutJournal(rec); err != nil {
		// The blocks are in no record now: commit them next time.
		c.mu.Lock()
		c.jstop()
		c.mu.Unlock()
		return true, f.ioErr("fsync journal", err)
	}
	c.mu.Lock()
	c.j.landed = append(c.j.landed, jrec{seq: rec.Seq, blocks: nblocks})
	c.j.live += nblocks
	c.mu.Unlock()
	return true, nil
}

// jdrop is what a commit's batch deletes of one volume's records.
type jdrop struct {
	v    *volume
	recs []jrec
}

// journalDrops deletes in b every landed record whose blocks the trees
// hold (covered), and every record of a deleted volume. Called with the
// state lock held exclusively, right before the trees are flushed into b:
// what covered a record is in them. If b does not land, journalUndrop.
func (f *FS) journalDrops(b *meta.Batch) []jdrop {
	f.jvmu.Lock()
	defer f.jvmu.Unlock()
	var drops []jdrop
	for ino, v := range f.jvols {
		c := &v.c
		c.mu.Lock()
		i := 0
		for i < len(c.j.landed) && (c.j.landed[i].seq <= c.j.covered || c.deleted) {
			b.DelJournal(ino, c.j.landed[i].seq)
			c.j.live -= c.j.landed[i].blocks
			i++
		}
		if i > 0 {
			drops = append(drops, jdrop{v: v, recs: c.j.landed[:i:i]})
			c.j.landed = c.j.landed[i:]
		}
		c.mu.Unlock()
	}
	return drops
}

// journalUndrop gives the records of a batch that did not land back.
func journalUndrop(drops []jdrop) {
	for _, d := range drops {
		c := &d.v.c
		c.mu.Lock()
		c.j.landed = append(slices.Clip(d.recs), c.j.landed...)
		for _, r := range d.recs {
			c.j.live += r.blocks
		}
		c.mu.Unlock()
	}
}

// journalMarks returns, with the state lock held exclusively, every
// journaling volume's last record number: a flush of every block cached
// at this moment covers them (journalCover).
func (f *FS) journalMarks() map[*volume]uint64 {
	f.jvmu.Lock()
	defer f.jvmu.Unlock()
	m := make(map[*volume]uint64, len(f.jvols))
	for _, v := range f.jvols {
		v.c.mu.Lock()
		m[v] = v.c.j.next
		v.c.mu.Unlock()
	}
	return m
}

func journalCover(marks map[*volume]uint64) {
	for v, k := range marks {
		v.c.jcover(k)
	}
}
