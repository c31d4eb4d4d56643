package fs

// Room "lifecycle" (doc.go, "Rooms"): fsck (Check, Repair) opens a data
// dir on its own, read-only unless repairing.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/meta"
)

// The offline check (vafs fsck) reads a data dir without changing a byte
// of it: not through Open (which recovers, sweeps, commits and starts the
// committer), but with the metadata opened read-only, the block log
// opened for reads only (OpenLog lists the store; reads open segment
// files) and the store behind a guard that refuses Create and Remove.
// Repair is the only thing here that writes, and every change it makes is
// decided by a walk of every committed tree, never by a stored count.

// maxBlockProblems bounds the lines about single blocks (a wholly corrupt
// segment would print 16384); the counts stay exact.
const maxBlockProblems = 100

// CheckReport is what Check found (and what Repair changed).
type CheckReport struct {
	*meta.CheckReport
	Segments     int    // segment files stored
	SegmentBytes uint64 // their total size
	// CorruptBlocks counts block references whose record fails its
	// checksum or header checks.
	CorruptBlocks int
	// MissingObjects counts block references that could not be read at
	// all: their segment is missing, or the read failed.
	MissingObjects int
	// Missing is, per segment the trees reference that the store does not
	// hold, the block references into it.
	Missing map[blocks.SegmentID]uint64
	// Unreferenced lists the stored segments no tree reaches. Those of
	// this host are what a crash leaves behind (appended after the last
	// commit, or dead ones whose removal it interrupted): not a problem,
	// the next mount (or Repair) removes them, unless the trees are
	// Damaged (the walk may have missed what references them: nothing
	// removes them then). Another host's is a problem, and never removed.
	Unreferenced []StraySegment
	// Repairs says what Repair changed, one line per change.
	Repairs []string
	// JournalRecords and JournalBlocks count the fsync journal's records
	// (fs/journal.go) a crash left: fsynced blocks not yet in a tree, which
	// the next mount applies. Not a problem; a corrupt one is, and neither
	// Check nor Repair removes it.
	JournalRecords, JournalBlocks int
}

// StraySegment is a stored segment that no tree references.
type StraySegment struct {
	ID      blocks.SegmentID
	Size    int64 // bytes, as the store reports them
	Foreign bool  // its host id is not this data dir's
}

// NotDataDirError says why a directory is not a vafs data dir; it matches
// meta.ErrNotVafs.
type NotDataDirError struct {
	Dir, Reason string
}

func (e *NotDataDirError) Error() string {
	return fmt.Sprintf("%s: not a vafs data dir (%s)", e.Dir, e.Reason)
}

func (e *NotDataDirError) Unwrap() error { return meta.ErrNotVafs }

// Clean reports whether the check found nothing wrong. Unreferenced
// segments of this host are not wrong (see Unreferenced).
func (r *CheckReport) Clean() bool {
	return len(r.Problems) == 0 && r.CorruptBlocks == 0 && r.MissingObjects == 0 && !r.Damaged
}

// Check verifies a data dir offline and changes nothing in it: every
// reference count of nodes and segments against what the committed trees
// reach, every reachable block's checksum, every superblock counter
// against the numbers in use, and which stored segments no tree reaches.
// It takes the data dir's lock shared, so a running mount (or a mount
// starting meanwhile) is refused; a directory that is not a data dir is a
// *NotDataDirError, never created. opts.DataDir and opts.Store are used
// (opts.MetaFS, when set, holds the metadata, as for Open).
func Check(opts Options) (*CheckReport, error) { return check(opts, false) }

// Repair checks (as Check) and then, holding the lock exclusively, fixes
// what a walk decides: it removes this host's segments that no tree
// references, rewrites wrong segment and node counts to what the trees
// hold, deletes unreachable nodes and raises superblock counters that are
// not above the numbers in use (the segment sequence also above every
// stored segment of this host). Another host's segments are never removed.
// Damaged trees (a node missing) are not recounted and nothing is removed
// from them: only counters are raised. The report is the check before the
// repair; Repairs lists each change.
func Repair(opts Options) (*CheckReport, error) { return check(opts, true) }

func check(opts Options, repair bool) (*CheckReport, error) {
	if opts.Store == nil {
		return nil, fmt.Errorf("fs: check: no block store")
	}
	if opts.MemMeta {
		return nil, fmt.Errorf("%w: check: metadata kept in memory went with its mount", ErrInvalid)
	}
	lock, err := lockForCheck(opts.DataDir, repair)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	rep, err := checkLocked(opts)
	if err != nil || !repair {
		return rep, err
	}
	return rep, repairLocked(opts, rep)
}

// lockForCheck takes the flock of DATA/LOCK, opened read-only: never
// created, truncated or written. No LOCK means no vafs ever used dir.
func lockForCheck(dir string, exclusive bool) (*os.File, error) {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, &NotDataDirError{dir, "no such directory"}
	case err != nil:
		return nil, fmt.Errorf("fs: check %s: %w", dir, err)
	case !st.IsDir():
		return nil, &NotDataDirError{dir, "not a directory"}
	}
	lf, err := os.Open(filepath.Join(dir, "LOCK"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, &NotDataDirError{dir, "no LOCK file: no vafs has used it"}
	}
	if err != nil {
		return nil, fmt.Errorf("fs: check %s: %w", dir, err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if err := syscall.Flock(int(lf.Fd()), how|syscall.LOCK_NB); err != nil {
		lf.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is in use by a vafs mount (pid %d); unmount it first", ErrLocked, dir, LockHolder(dir))
		}
		return nil, fmt.Errorf("fs: lock %s: %w", dir, err)
	}
	return lf, nil
}

func openMetaReadOnly(opts Options) (*meta.DB, error) {
	var db *meta.DB
	var err error
	if opts.MetaFS != nil {
		db, err = meta.OpenReadOnly("meta", opts.MetaFS)
	} else {
		db, err = meta.OpenReadOnly(filepath.Join(opts.DataDir, "meta"), nil)
	}
	switch {
	case errors.Is(err, meta.ErrNotVafs):
		return nil, &NotDataDirError{opts.DataDir, "no vafs metadata in meta/"}
	case err != nil:
		return nil, fmt.Errorf("%s: %w", opts.DataDir, err)
	}
	return db, nil
}

// readOnlyStore refuses what would change the store: a check must not,
// whatever path the code below takes.
type readOnlyStore struct{ blocks.Store }

func (s readOnlyStore) Create(id blocks.SegmentID) (blocks.SegmentFile, error) {
	return nil, fmt.Errorf("%w: check: create segment %s", ErrReadOnly, id)
}

func (s readOnlyStore) Remove(id blocks.SegmentID) error {
	return fmt.Errorf("%w: check: remove segment %s", ErrReadOnly, id)
}

func checkLocked(opts Options) (*CheckReport, error) {
	db, err := openMetaReadOnly(opts)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	trees, err := meta.OpenTrees(db)
	if err != nil {
		return nil, err
	}
	sb := db.Super()
	store := readOnlyStore{opts.Store}
	lg, err := blocks.OpenLog(store, blocks.LogConfig{Host: sb.HostID, NextSeq: sb.NextSeq, SegmentBlocks: opts.SegmentBlocks})
	if err != nil {
		return nil, err
	}
	defer lg.Close() // nothing was appended: no sync, no segment
	ids, err := store.List()
	if err != nil {
		return nil, fmt.Errorf("fs: check: list segments: %w", err)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	rep := &CheckReport{Missing: map[blocks.SegmentID]uint64{}}
	var probs []string
	if err := db.Journal(func(r *meta.JournalRecord) error {
		rep.JournalRecords++
		for _, run := range r.Runs {
			rep.JournalBlocks += len(run.Data) / BlockSize
		}
		return nil
	}); err != nil {
		probs = append(probs, fmt.Sprintf("fsync journal: %v (the mount refuses to start until it is readable)", err))
	}
	var blockProbs int
	blockProblem := func(format string, args ...any) {
		if blockProbs++; blockProbs <= maxBlockProblems {
			probs = append(probs, fmt.Sprintf(format, args...))
		}
	}
	sizes := map[blocks.SegmentID]int64{}
	for _, id := range ids {
		size, err := segmentSize(store, id)
		if err != nil {
			probs = append(probs, fmt.Sprintf("segment %s cannot be opened: %v", id, err))
			continue
		}
		sizes[id] = size
	}
	var buf []byte
	mr, err := trees.Check(func(seg uint64, idx uint32, n uint64) error {
		id := blocks.SegmentID(seg)
		if _, ok := sizes[id]; !ok {
			rep.Missing[id] += n
			rep.MissingObjects += int(n)
			return nil
		}
		if need := int(n) * BlockSize; cap(buf) < need {
			buf = make([]byte, need)
		}
		if err := lg.Read(blocks.Extent{Seg: id, Index: idx, N: uint32(n)}, buf[:n*BlockSize]); err == nil {
			return nil
		}
		// Name every bad record of the extent, not just the first.
		for i := uint32(0); i < uint32(n); i++ {
			_, _, err := lg.ReadRecord(id, idx+i)
			switch {
			case err == nil:
			case errors.Is(err, blocks.ErrChecksum):
				rep.CorruptBlocks++
				blockProblem("corrupt block: %v", err)
			default:
				rep.MissingObjects++
				blockProblem("segment %s record %d cannot be read: %v", id, idx+i, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	rep.CheckReport = mr
	if blockProbs > maxBlockProblems {
		probs = append(probs, fmt.Sprintf("... and %d more bad blocks", blockProbs-maxBlockProblems))
	}
	for _, id := range sortedIDs(rep.Missing) {
		probs = append(probs, fmt.Sprintf("segment %s is missing: trees reference %d blocks in it", id, rep.Missing[id]))
	}
	for _, id := range ids {
		size, ok := sizes[id]
		if !ok {
			continue
		}
		rep.Segments++
		rep.SegmentBytes += uint64(size)
		if mr.SegRefs[uint64(id)] != 0 {
			continue
		}
		s := StraySegment{ID: id, Size: size, Foreign: id.Host() != sb.HostID}
		rep.Unreferenced = append(rep.Unreferenced, s)
		if s.Foreign {
			probs = append(probs, fmt.Sprintf("segment %s (%d bytes) is stored and no tree references it; its host id %06x is not this data dir's (%06x), so vafs never removes it",
				id, size, id.Host(), sb.HostID))
		}
	}
	// The segment sequence must be above every segment of this host a
	// tree or a count refers to. A stored segment no tree references may
	// be above it: one appended after the last commit; a mount skips its
	// number (Open lists the store) and removes it.
	var top blocks.SegmentID
	for _, m := range []map[uint64]int64{mr.SegRefs, mr.StoredSegRefs} {
		for seg := range m {
			if id := blocks.SegmentID(seg); id.Host() == sb.HostID && id.Seq() >= sb.NextSeq && id > top {
				top = id
			}
		}
	}
	if top != 0 {
		probs = append(probs, fmt.Sprintf("superblock: next segment sequence %d is not above %d, the sequence of segment %s, which is in use", sb.NextSeq, top.Seq(), top))
	}
	mr.Problems = append(mr.Problems, probs...)
	return rep, nil
}

func sortedIDs[V any](m map[blocks.SegmentID]V) []blocks.SegmentID {
	out := make([]blocks.SegmentID, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// nextSeqFor is the lowest segment sequence that is above every segment of
// host that rep saw: stored, referenced by a tree or counted.
func nextSeqFor(rep *CheckReport, host uint32) uint64 {
	var next uint64
	see := func(id blocks.SegmentID) {
		if id.Host() == host {
			next = max(next, id.Seq()+1)
		}
	}
	for _, s := range rep.Unreferenced {
		see(s.ID)
	}
	for _, m := range []map[uint64]int64{rep.SegRefs, rep.StoredSegRefs} {
		for seg := range m {
			see(blocks.SegmentID(seg))
		}
	}
	return next
}

// repairLocked makes the changes Repair documents, with the lock held
// exclusively since the check. The metadata is opened for writing only if
// there is something to change; the counts are committed before any
// segment is removed, so a crash in between leaves at most a segment no
// count names, which the next mount (or repair) removes after its walk.
func repairLocked(opts Options, rep *CheckReport) error {
	host := rep.Super.HostID
	nextSeq := nextSeqFor(rep, host)
	var strays []StraySegment
	for _, s := range rep.Unreferenced {
		if !s.Foreign {
			strays = append(strays, s)
		}
	}
	if len(rep.RepairPlan(nextSeq)) == 0 && len(strays) == 0 {
		return nil
	}
	var db *meta.DB
	var err error
	if opts.MetaFS != nil {
		db, err = meta.Open("meta", opts.MetaFS)
	} else {
		db, err = meta.Open(filepath.Join(opts.DataDir, "meta"), nil)
	}
	if err != nil {
		return err
	}
	defer db.Close()
	trees, err := meta.OpenTrees(db)
	if err != nil {
		return err
	}
	// Walk again on the writable database (the trees only: the blocks
	// were read by the check); nothing changed since, under the lock.
	mr, err := trees.Check(nil)
	if err != nil {
		return err
	}
	done, err := trees.Repair(mr, nextSeq)
	rep.Repairs = append(rep.Repairs, done...)
	if errors.Is(err, meta.ErrDamaged) {
		if len(strays) > 0 {
			rep.Repairs = append(rep.Repairs, fmt.Sprintf("not removing %d unreferenced segments: a tree is damaged, so the walk may have missed what references them", len(strays)))
		}
		return nil
	}
	if err != nil {
		return err
	}
	var failed []string
	for _, s := range strays {
		if mr.SegRefs[uint64(s.ID)] != 0 || s.ID.Host() != host {
			continue // the walk decides, and only for this host's segments
		}
		if err := opts.Store.Remove(s.ID); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", s.ID, err))
			continue
		}
		rep.Repairs = append(rep.Repairs, fmt.Sprintf("removed segment %s (%d bytes): no tree references it", s.ID, s.Size))
	}
	if len(failed) > 0 {
		return fmt.Errorf("fs: repair: removing segments: %s", strings.Join(failed, "; "))
	}
	return nil
}
