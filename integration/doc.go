// Package integration drives the built vafs binary on a real FUSE mount with real
// clients: qemu-img, qemu-io, fio, cp, mkfs.ext4/e2fsck, plus crash, ENOSPC and
// command-line tests. It holds tests only.
//
// The tests need root and /dev/fuse and skip (saying so) without them; a test whose
// client program is missing skips with the program's name. The binary under test is
// $VAFS_BIN, or else TestMain builds ./cmd/vafs into a temp dir.
//
// Every test gets its own data dir and mountpoint under one temp root; TestMain fails
// the run if any mount under that root is left in /proc/mounts at the end.
//
// Run: go test -count=1 -timeout 15m ./integration/
// Tuning: VAFS_CRASH_CYCLES (default 24) sets the crash-consistency cycles,
// VAFS_CRASH_SEED repeats a crash schedule, VAFS_MOUNT_FLAGS (e.g.
// "--writeback-cache") is added to every foreground `vafs mount`.
//
// Imports: the standard library only; this package never imports vafs packages,
// it talks to the binary as a user would.
package integration
