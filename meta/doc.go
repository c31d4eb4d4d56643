// Package meta keeps all metadata in Pebble: the superblock, the namespace
// (inodes, directory entries, xattrs, orphans), and per volume a
// copy-on-write sparse radix tree that maps 4 KiB block numbers to block
// locations, with the reference counts that let trees share subtrees.
//
// Two kinds of writes reach Pebble:
//   - namespace changes are applied at once in small batches (not synced;
//     the next synced commit makes them durable, Pebble's WAL keeps order);
//   - tree state (nodes, refcounts, heads, segment reference counts) lives
//     in memory until Trees.Flush writes it into the commit batch that the
//     caller syncs after making the blocks durable.
//
// Segment ids are plain uint64 here: meta must never import blocks (nor fs,
// cluster, cachessd or cmd). The key layout is documented in keys.go and
// docs/format.md.
package meta
