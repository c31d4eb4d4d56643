// Package integration drives the built vafs binary on a real FUSE mount with real
// clients: qemu-img, qemu-io, fio, cp, mkfs.ext4/e2fsck, plus crash, ENOSPC and
// command-line tests. It holds tests only.
//
// The tests need root and /dev/fuse and skip (saying so) without them; a test whose
// client program is missing skips with the program's name. The binary under test is
// $VAFS_BIN (with its engine, vafsd, beside it), or else TestMain builds ./cmd/vafs and
// ./cmd/vafsd into a temp dir.
//
// What is covered: qemu-img (create/info/map/check/convert/compare/resize, 16 TiB),
// qemu-io (page cache, O_DIRECT with threads and native AIO, unaligned, zero
// ranges), fio with crc32c verify before and after a remount, cp --sparse and
// --reflink/copy_file_range (sparse, equal, isolated), ext4 in an image (mkfs,
// e2fsck, loop mount), cp -a of a tree, SIGKILL crash cycles with fsync'd records,
// files and clones, clean-shutdown and fsync durability, ENOSPC and space use on a
// small tmpfs, a corrupted block reading as EIO, and the CLI's refusals. Memory:
// vafs in a memory cgroup (v2, or v1 where the memory controller is bound there)
// whose limit is below --write-cache, beside a memory hog: no OOM kill, data
// verified (a root run that cannot create the cgroup fails).
// Clones and snapshots: vafs clone of a 1 GiB file (equal, isolated both ways,
// across remounts, no new space), of a directory tree (modes, owners, times,
// symlinks, xattrs) and of a snapshot; cp --reflink=auto of a fully written
// 10 GiB image; snapshot create/list/delete/rollback with .snapshots files read by
// cmp and qemu-img convert, EROFS on every change there, the open-for-writing
// refusal and --force; 1,000 snapshots of one volume across a remount; exact
// describe/df figures; space given back by deletes and compaction (2 GiB live
// ends within 15% of 2 GiB); SIGKILL during clone/snapshot/rollback/delete loops
// with vafs fsck after every crash.
//
// Every test gets its own data dir and mountpoint under one temp root; TestMain fails
// the run if any mount under that root is left in /proc/mounts at the end.
//
// Run: go test -count=1 -timeout 30m ./integration/
// Tuning: VAFS_CRASH_CYCLES (default 24) sets the crash-consistency cycles,
// VAFS_CRASH_SEED repeats a crash schedule, VAFS_MOUNT_FLAGS (e.g.
// "--writeback-cache") is added to every foreground `vafs mount`,
// VAFS_SNAPCRASH_CYCLES (default 10) sets the snapshot crash cycles and
// VAFS_REFLINK_GIB (default 10) the size of the image copied with cp.
//
// Imports: the standard library only; this package never imports vafs packages,
// it talks to the binary as a user would.
package integration
