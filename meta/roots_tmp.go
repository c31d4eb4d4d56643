package meta

import "encoding/binary"

// TEMPORARY (deleted when the lead's meta/snapshot.go lands on main): the
// roots of every live head, without snapshots.

// Root is the root of one tree: a volume's head (Snap == 0) or one of its
// snapshots.
type Root struct {
	Vol  uint64
	Snap uint64 // 0 for the head
	Head Head
}

func (t *Trees) allRoots() ([]Root, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.allRootsLocked()
}

func (t *Trees) allRootsLocked() ([]Root, error) {
	var out []Root
	seen := map[uint64]bool{}
	var derr error
	err := t.db.scan([]byte{pfxHead}, func(k, v []byte) bool {
		vol := binary.BigEndian.Uint64(k[1:])
		seen[vol] = true
		if t.dropHeads[vol] {
			return true
		}
		h := t.heads[vol]
		if h == nil {
			h = &Head{}
			if err := decodeVersioned(v, headVersion, h); err != nil {
				derr = err
				return false
			}
		}
		if h.Root != 0 {
			out = append(out, Root{Vol: vol, Head: *h})
		}
		return true
	})
	if err == nil {
		err = derr
	}
	for vol, h := range t.heads {
		if !seen[vol] && !t.dropHeads[vol] && h.Root != 0 {
			out = append(out, Root{Vol: vol, Head: *h})
		}
	}
	return out, err
}
