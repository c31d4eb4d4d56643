// Package blocks is the block store: the segment format, checksums, the write
// log that appends 4 KiB blocks to the host's open segments (one per
// placement class), and the Store interface through which segments are
// kept.
//
// A block is always written as a record: a 40-byte header (checksum, segment,
// index, volume and block number it was written for) followed by 4096 bytes of
// data. Every read verifies the checksum; a mismatch is a *CorruptError and the
// bytes are never returned.
//
// blocks owns the segment format (docs/format.md) and the Store contract.
// Implementations live elsewhere: cachessd (the local SSD tier) and cluster
// (peers). blocks must never import meta, fs, cachessd, cluster or cmd.
package blocks
