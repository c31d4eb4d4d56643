package fs

// Room "lifecycle" (doc.go, "Rooms"): counters.

import "sync/atomic"

// corruptReads counts reads that failed a checksum since start.
var corruptReads atomic.Uint64

// CorruptReads is the number of reads that failed a checksum.
func CorruptReads() uint64 { return corruptReads.Load() }
