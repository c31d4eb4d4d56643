package meta

// InodeCount is the number of inodes in use (statfs's used inodes). It
// scans the inode keys: callers cache it.
func (d *DB) InodeCount() (uint64, error) {
	var n uint64
	err := d.scan([]byte{pfxInode}, func(k, v []byte) bool {
		n++
		return true
	})
	return n, err
}
