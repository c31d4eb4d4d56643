package fs

// Room "commit" (doc.go, "Rooms"): making the trees durable. It owns
// commitMu, the group commit (groupMu, groupReq, groupDone) and the
// background committer and flusher goroutines; it takes the state lock
// exclusively, briefly, to capture the trees. It calls the write cache and
// the fsync journal (cache) and the store, never a room above it.

import (
	"errors"
	"slices"
	"time"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/meta"
)

func (f *FS) committer() {
	defer close(f.done)
	t := time.NewTicker(min(f.opts.CommitInterval, f.opts.DirtyExpire))
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
			if f.commitDue() {
				if err := f.backgroundCommit(); err != nil {
					f.lg.Printf("background commit: %v", err)
				}
			}
		}
	}
}

// commitDue says whether the background commit runs now. While the
// write-back cache holds blocks, not before the oldest is DirtyExpire old:
// the cache is to a volume what the page cache is to a plain file, and the
// kernel writes a file's dirty pages back once they are
// vm.dirty_expire_centisecs old (30 s), not every 5 s; a commit every 5 s
// rewrote a guest's whole working set to the log every 5 s (a guest
// rewriting 1 GiB at 2 GB/s paid a 1 GiB commit per 5 s of writes). Tree
// changes without cached blocks behind them (writes that went to the log,
// a flushed volume) are committed every CommitInterval as before. A
// commit, whenever it runs, holds every write made before it, cached or
// not. fsync commits at once either way.
func (f *FS) commitDue() bool {
	if f.wc.used.Load() > 0 {
		return f.wc.expired(f.opts.DirtyExpire)
	}
	return f.trees.Dirty() > 0
}

// Commit makes everything written so far durable: what the write-back
// cache holds goes to the log, the appended blocks are synced, then one
// synced Pebble batch with the trees, refcounts and heads that reach them.
// Afterwards segments no tree references are removed.
func (f *FS) Commit() error { return f.commitWith(nil) }

// commitVolume makes one volume durable: its cached writes go to the log
// (beside its writers; other volumes' caches are left alone), then the
// trees are committed as they are (commitMeta). This is fsync: one VM's
// fsync writes out its own cached data, never a neighbour's
// (docs/write-cache.md, "Per-volume fsync").
func (f *FS) commitVolume(ino uint64) error {
	failed := f.vol(ino).c.jrestart()
	err := f.flushVolume(ino)
	if err == nil {
		err = f.commitMeta()
	}
	if err != nil {
		failed()
	}
	return err
}

// commitMeta commits the trees as they are, flushing no cache: what is in
// them is every volume's writes that reached the log, each a set of whole
// block writes (a disk's contract for writes not yet flushed), with sizes
// that never run ahead of their data (extending writes are not cached).
//
// Commits are grouped: a caller that registers while another commit is
// under way waits for it, and the next one to run covers every caller
// registered before its capture, so concurrent fsyncs of different volumes
// share one metadata batch and one sync.
func (f *FS) commitMeta() error {
	f.groupMu.Lock()
	f.groupReq++
	my := f.groupReq
	f.groupMu.Unlock()
	f.commitMu.Lock()
	defer f.commitMu.Unlock()
	f.groupMu.Lock()
	if f.groupDone >= my {
		f.groupMu.Unlock()
		return nil
	}
	upto := f.groupReq
	f.groupMu.Unlock()
	f.state.Lock()
	b := f.db.NewBatch()
	f.db.SetNextSeq(f.log.NextSeq())
	drops := f.journalDrops(b)
	fl := f.trees.Flush(b)
	f.state.Unlock()
	if err := f.land(b, fl, drops); err != nil {
		return err
	}
	f.groupMu.Lock()
	f.groupDone = max(f.groupDone, upto)
	f.groupMu.Unlock()
	return nil
}

// backgroundCommit writes the cache out and commits, without holding
// commitMu while it writes: an fsync meanwhile commits beside it instead
// of waiting for up to DirtyExpire of every volume's writes.
func (f *FS) backgroundCommit() error {
	if f.wc.used.Load() > 0 {
		// Blocks cached from here on are aged from now.
		since := time.Now().UnixNano()
		f.wc.dirtySince.Store(since)
		if err := f.flushAll(); err != nil {
			f.wc.dirtySince.Store(1) // "old": retried at the next tick
			return err
		}
		if f.wc.used.Load() == 0 {
			f.wc.dirtySince.CompareAndSwap(since, 0)
		}
	}
	return f.commitMeta()
}

// commitWith is Commit with a change made atomically with it: fn runs
// under the state lock held exclusively (no write, no other change in
// flight), may change the trees and add namespace records to the batch,
// and everything lands in the one synced batch. A crash leaves either the
// state before fn or the state after it. fn must check before it changes
// anything: an error from fn aborts the commit, but tree changes it made
// stay in memory.
//
// Every commitWith holds every write made before it began, whatever the
// volume, cached ones included (fs/wcache.go). fsync and the background
// commit use commitMeta instead, which holds what the trees hold.
func (f *FS) commitWith(fn func(b *meta.Batch) error) error {
	f.commitMu.Lock()
	defer f.commitMu.Unlock()
	all := true
	if f.wc.used.Load() > 0 {
		if fn == nil {
			// Generation mode: freeze what is cached as this commit's and
			// flush it beside the writers, who go on caching into a new
			// generation; the trees change only by this flush, so what is
			// captured below is the state at the freeze. The first other
			// change to a tree in the window (fold) turns it into the
			// mode below. An fn (snapshot, clone, rollback...) needs every
			// volume's cache empty when it runs: it uses the mode below.
			if err := f.flushGeneration(); err != nil {
				return err
			}
			all = f.wc.committing.Load()
		}
		if all {
			// The cache is flushed beside the writers, whose writes
			// meanwhile go to the log directly (storeBlocks), so the flush
			// ends; what slipped in is flushed under the state lock. The
			// commit then holds a prefix of every writer's writes, never a
			// later write without an earlier one.
			f.wc.committing.Store(true)
			if err := f.flushAll(); err != nil {
				f.endWindow(err)
				return err
			}
		}
	}
	if fn != nil {
		// fn may change a volume's content (rollback): no fsync journal
		// record may be on its way then (fs/journal.go). Once captured,
		// the change keeps the volume unsettled until it lands.
		f.jmu.Lock()
	}
	unlock := func() {
		f.state.Unlock()
		if fn != nil {
			f.jmu.Unlock()
		}
	}
	f.state.Lock()
	all = all || f.wc.committing.Load()
	if err := f.flushLocked(all); err != nil {
		f.endWindowLocked(err)
		unlock()
		return err
	}
	if all {
		f.wc.dirtySince.Store(0) // nothing is cached now
	}
	f.endWindowLocked(nil)
	b := f.db.NewBatch()
	if fn != nil {
		if err := fn(b); err != nil {
			unlock()
			b.Close()
			return err
		}
	}
	f.db.SetNextSeq(f.log.NextSeq())
	drops := f.journalDrops(b)
	fl := f.trees.Flush(b)
	unlock()
	return f.land(b, fl, drops)
}

// land makes a captured commit durable: the blocks its trees reach are
// synced, then its batch is committed with a sync; then segments it found
// dead are removed. Caller holds commitMu.
func (f *FS) land(b *meta.Batch, fl *meta.Flushed, drops []jdrop) error {
	if err := f.log.Sync(); err != nil {
		b.Close()
		f.trees.Unflush(fl)
		journalUndrop(drops)
		if errors.Is(err, blocks.ErrSyncFailed) && f.syncFailLogged.CompareAndSwap(false, true) {
			f.lg.Printf("SYNC FAILED, no more commits (every fsync returns EIO; what was fsynced before is safe): %v", err)
		}
		return f.ioErr("commit: sync blocks", err)
	}
	if err := b.Commit(true); err != nil {
		f.trees.Unflush(fl)
		journalUndrop(drops)
		return f.ioErr("commit: metadata", err)
	}
	f.trees.Landed(fl)
	if len(fl.Dead) > 0 {
		// Re-check under the state lock: a dead segment may have been
		// referenced again (it was still open) since the flush. A sealed
		// one with a count of 0 is never appended to or mapped again, so
		// its file is removed with writers going on (an unlink of a 64 MiB
		// segment takes ~25 ms here); an open one is left (Log.Remove
		// never removes it either). gcMu waits for reads in flight and
		// keeps new ones (which cannot find these segments) out meanwhile.
		f.state.Lock()
		f.gcMu.Lock()
		refs := f.trees.SegRefs()
		var gone []uint64
		for _, seg := range fl.Dead {
			if refs[seg] == 0 && !f.log.IsOpen(blocks.SegmentID(seg)) {
				gone = append(gone, seg)
			}
		}
		f.state.Unlock()
		for _, seg := range gone {
			if err := f.log.Remove(blocks.SegmentID(seg)); err != nil {
				f.lg.Printf("remove dead segment %016x: %v", seg, err)
			}
		}
		f.gcMu.Unlock()
	}
	f.trees.Trim()
	return nil
}

// writeBack is the background flusher: while the cache holds more than
// half its size, the volumes with the most cached blocks are flushed (into
// the trees; the next commit makes them durable). After a memory pressure
// event it writes everything out and commits at once (relieve), and until
// the pressure has passed "its size" is the lowered one (wcache.size).
func (f *FS) writeBack() {
	defer close(f.wbDone)
	psiDone := make(chan struct{})
	go func() {
		defer close(psiDone)
		f.watchPressure(f.stop)
	}()
	defer func() { <-psiDone }()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		case <-f.wc.kick:
		}
		if f.wc.pressed.Swap(false) {
			f.relieve()
		}
		if bg := f.wc.bgSize(); f.wc.used.Load() > bg && !f.wc.gen.Load() { // a window's flush is under way
			vols := f.cachedVolumes()
			inos := make([]uint64, 0, len(vols))
			for ino := range vols {
				inos = append(inos, ino)
			}
			slices.SortFunc(inos, func(a, b uint64) int { return int(vols[b].c.n.Load() - vols[a].c.n.Load()) })
			for _, ino := range inos {
				if f.wc.used.Load() <= bg/2 {
					break
				}
				if err := f.flushVolume(ino); err != nil {
					f.lg.Printf("write-back of volume %d: %v", ino, err)
				}
			}
		}
		if f.wc.mapped.Load() > f.wc.used.Load() && time.Since(time.Unix(0, f.wc.lastPut.Load())) > trimAfter {
			f.wc.trim()
		}
	}
}
