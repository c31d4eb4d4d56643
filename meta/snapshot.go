package meta

import (
	"encoding/binary"
	"fmt"
	"sort"
)

const snapVersion = 1

// Snapshot is a frozen head kept under a name. Its tree is shared with the
// volume's head (and with clones) until either side writes: the root holds
// one reference for the snapshot, so nothing it reaches is ever changed in
// place or freed while it exists.
type Snapshot struct {
	ID      uint64 `msgpack:"i"` // unique in the data dir, never reused
	Head    Head   `msgpack:"h"`
	Created int64  `msgpack:"c"` // unix ns
	Vol     uint64 `msgpack:"-"` // from the key
	Name    string `msgpack:"-"` // from the key
}

// Root is a tree root that keeps blocks alive: a volume's head (Snap 0) or
// one of its snapshots.
type Root struct {
	Vol  uint64
	Snap uint64
	Head Head
}

type snapKey struct {
	vol  uint64
	name string
}

// ErrExists: the snapshot name is taken.
var ErrExists = fmt.Errorf("meta: already exists")

// loadSnapshots reads every snapshot into memory (at open). There are few
// enough — a Head each — that keeping them all is cheaper than a lookup
// by id in Pebble on every read of a .snapshots file.
func (t *Trees) loadSnapshots() error {
	var derr error
	err := t.db.scan([]byte{pfxSnap}, func(k, v []byte) bool {
		if len(k) < 9 {
			derr = fmt.Errorf("%w: snapshot key %x", ErrCorrupt, k)
			return false
		}
		s := &Snapshot{Vol: binary.BigEndian.Uint64(k[1:9]), Name: string(k[9:])}
		if err := decodeSnapshot(v, s); err != nil {
			derr = fmt.Errorf("snapshot %q of volume %d: %w", s.Name, s.Vol, err)
			return false
		}
		t.putSnap(s)
		return true
	})
	if err == nil {
		err = derr
	}
	return err
}

// decodeSnapshot decodes the value of a snapshot key (Vol and Name come
// from the key).
func decodeSnapshot(v []byte, s *Snapshot) error {
	if err := decodeRecord(v, snapVersion, s); err != nil {
		return err
	}
	return checkHead(&s.Head)
}

// decodeHead decodes the value of a volume head key.
func decodeHead(v []byte, h *Head) error {
	if err := decodeRecord(v, headVersion, h); err != nil {
		return err
	}
	return checkHead(h)
}

// checkHead refuses a head the tree code cannot walk: it descends Height
// levels from Root. A write below a root at height 100 divided by zero
// (spans above MaxHeight overflow to 0); at height 0 or 8 it went on at
// levels the nodes do not have.
func checkHead(h *Head) error {
	if h.Height > MaxHeight || (h.Root != 0 && h.Height == 0) {
		return fmt.Errorf("%w: head with root %d at height %d", ErrCorrupt, h.Root, h.Height)
	}
	return nil
}

func (t *Trees) putSnap(s *Snapshot) {
	m := t.snaps[s.Vol]
	if m == nil {
		m = map[string]*Snapshot{}
		t.snaps[s.Vol] = m
	}
	m[s.Name] = s
	t.snapByID[s.ID] = s
}

func (t *Trees) dropSnap(s *Snapshot) {
	delete(t.snaps[s.Vol], s.Name)
	if len(t.snaps[s.Vol]) == 0 {
		delete(t.snaps, s.Vol)
	}
	delete(t.snapByID, s.ID)
	t.dirtySnaps[snapKey{s.Vol, s.Name}] = true
}

// freeze gives h's tree one more reference (for a snapshot or a clone) and
// moves h to a new generation, so every node the frozen copy reaches is
// copied before h changes it. O(1).
func (t *Trees) freeze(vol uint64, h *Head) (Head, error) {
	if h.Root != 0 {
		if err := t.incRef(h.Root); err != nil {
			return Head{}, err
		}
	}
	frozen := *h
	h.Gen = t.db.allocGen()
	t.dirtyHead(vol, h)
	return frozen, nil
}

// CreateSnapshot freezes vol's head as snapshot name.
func (t *Trees) CreateSnapshot(vol uint64, name string, created int64) (Snapshot, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.snaps[vol][name] != nil {
		return Snapshot{}, fmt.Errorf("%w: snapshot %q", ErrExists, name)
	}
	h, err := t.head(vol)
	if err != nil {
		return Snapshot{}, err
	}
	t.dirtyHead(vol, h) // a never-written volume gets a head (and a gen) now
	frozen, err := t.freeze(vol, h)
	if err != nil {
		return Snapshot{}, err
	}
	s := &Snapshot{ID: t.db.alloc(&t.db.sb.NextSnap), Head: frozen, Created: created, Vol: vol, Name: name}
	t.putSnap(s)
	t.dirtySnaps[snapKey{vol, name}] = true
	return *s, nil
}

// DeleteSnapshot drops a snapshot and whatever only it reached.
func (t *Trees) DeleteSnapshot(vol uint64, name string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.snaps[vol][name]
	if s == nil {
		return fmt.Errorf("%w: snapshot %q", ErrNotFound, name)
	}
	if s.Head.Root != 0 {
		if err := t.decRef(s.Head.Root); err != nil {
			return err
		}
	}
	t.dropSnap(s)
	return nil
}

// Snapshots lists vol's snapshots, oldest first.
func (t *Trees) Snapshots(vol uint64) []Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Snapshot, 0, len(t.snaps[vol]))
	for _, s := range t.snaps[vol] {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// SnapshotByID finds a snapshot by id.
func (t *Trees) SnapshotByID(id uint64) (Snapshot, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.snapByID[id]
	if s == nil {
		return Snapshot{}, fmt.Errorf("%w: snapshot id %d", ErrNotFound, id)
	}
	return *s, nil
}

// setHead makes vol's head a writable copy of frozen under a new
// generation; whatever vol had before is dropped. Caller holds t.mu.
func (t *Trees) setHead(vol uint64, frozen Head) error {
	h, err := t.head(vol)
	if err != nil {
		return err
	}
	if frozen.Root != 0 {
		if err := t.incRef(frozen.Root); err != nil {
			return err
		}
	}
	if h.Root != 0 {
		if err := t.decRef(h.Root); err != nil {
			return err
		}
	}
	*h = frozen
	h.Gen = t.db.allocGen()
	t.dirtyHead(vol, h)
	return nil
}

// Rollback makes vol's head a writable copy of its snapshot name (content
// and size); the snapshot stays.
func (t *Trees) Rollback(vol uint64, name string, mtime int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.snaps[vol][name]
	if s == nil {
		return fmt.Errorf("%w: snapshot %q", ErrNotFound, name)
	}
	fh := s.Head
	fh.Mtime, fh.Ctime = mtime, mtime
	return t.setHead(vol, fh)
}

// Clone makes dst's head share src's whole tree: O(1). Both heads move to
// new generations, so either copies a shared node before changing it.
func (t *Trees) Clone(src, dst uint64, mtime int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	h, err := t.head(src)
	if err != nil {
		return err
	}
	frozen, err := t.freeze(src, h)
	if err != nil {
		return err
	}
	frozen.Ctime = mtime
	err = t.setHead(dst, frozen)
	if frozen.Root != 0 {
		// freeze's reference was only held across setHead.
		if derr := t.decRef(frozen.Root); err == nil {
			err = derr
		}
	}
	return err
}

// CloneSnapshot makes dst's head a writable copy of snapshot id.
func (t *Trees) CloneSnapshot(id, dst uint64, mtime int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.snapByID[id]
	if s == nil {
		return fmt.Errorf("%w: snapshot id %d", ErrNotFound, id)
	}
	fh := s.Head
	fh.Ctime = mtime
	return t.setHead(dst, fh)
}

// dropSnapshots drops every snapshot of vol (the volume is being deleted).
// Caller holds t.mu.
func (t *Trees) dropSnapshots(vol uint64) error {
	for _, s := range t.snaps[vol] {
		if s.Head.Root != 0 {
			if err := t.decRef(s.Head.Root); err != nil {
				return err
			}
		}
		t.dropSnap(s)
	}
	return nil
}

// allRootsLocked lists every root that keeps blocks alive: each live head
// (committed, overridden by the in-memory state) and each snapshot. Caller
// holds t.mu.
func (t *Trees) allRootsLocked() ([]Root, error) {
	var out []Root
	seen := map[uint64]bool{}
	for vol, h := range t.heads {
		seen[vol] = true
		if t.dropHeads[vol] || h.Root == 0 {
			continue
		}
		out = append(out, Root{Vol: vol, Head: *h})
	}
	var derr error
	err := t.db.scan([]byte{pfxHead}, func(k, v []byte) bool {
		vol := binary.BigEndian.Uint64(k[1:])
		if seen[vol] {
			return true
		}
		h := Head{}
		if err := decodeHead(v, &h); err != nil {
			derr = fmt.Errorf("head of volume %d: %w", vol, err)
			return false
		}
		if h.Root != 0 {
			out = append(out, Root{Vol: vol, Head: h})
		}
		return true
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return nil, err
	}
	for _, s := range t.snapByID {
		if s.Head.Root != 0 {
			out = append(out, Root{Vol: s.Vol, Snap: s.ID, Head: s.Head})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Vol != out[j].Vol {
			return out[i].Vol < out[j].Vol
		}
		return out[i].Snap < out[j].Snap
	})
	return out, nil
}

// allRoots is allRootsLocked for callers that do not hold t.mu.
func (t *Trees) allRoots() ([]Root, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.allRootsLocked()
}

// Roots lists every head and snapshot root (describe, df, fsck).
func (t *Trees) Roots() ([]Root, error) { return t.allRoots() }

// Volumes lists every volume that has a committed head or a snapshot
// (recovery compares them with the inodes).
func (t *Trees) Volumes() ([]uint64, error) {
	vols, err := t.Heads()
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	seen := map[uint64]bool{}
	for _, v := range vols {
		seen[v] = true
	}
	for v := range t.snaps {
		if !seen[v] {
			vols = append(vols, v)
		}
	}
	t.mu.Unlock()
	return vols, nil
}
