// Package cachessd is the local SSD tier: the directory of segment files on
// the host's fast disk that holds the write log and, on a single host, every
// block. It implements blocks.Store.
//
// Budgets, replacement policies and pinning of base images arrive with the
// cluster; today the tier holds everything the host writes.
//
// cachessd imports blocks (for the Store contract) and nothing above it.
package cachessd
