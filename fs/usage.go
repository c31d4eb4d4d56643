package fs

// Describe reports a file's size, allocation, sharing, snapshots and origin.
func (f *FS) Describe(ino uint64) (Description, error) { return Description{}, ErrNotSupported }

// Usage reports logical, physical and shared bytes of the whole data dir.
func (f *FS) Usage() (Usage, error) { return Usage{}, ErrNotSupported }

// Compact runs one compaction pass now (the background pass runs every
// 30 s): sealed segments less than half live have their live blocks moved
// and their files removed. Durable on return.
func (f *FS) Compact() (CompactStats, error) { return CompactStats{}, ErrNotSupported }
