package integration

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Crash consistency of the snapshot and clone commands: one worker runs vafs
// clone (of files, snapshots and a directory) / snapshot create / snapshot
// delete / snapshot rollback / rm of clones and fsynced one-block writes, recording each operation once it returned
// success, while the mount process is SIGKILLed at a random moment. After every
// kill fsck must be clean and, after a remount, the whole visible state (files,
// their content, their snapshots and the snapshots' content) must be exactly
// the acknowledged state, or that state plus the one operation in flight.

const (
	scFileSize = 1 * MiB
	scBlocks   = scFileSize / blockSize
	scBaseVols = 3
	scMaxClone = 8
	scMaxSnaps = 4
)

// scVol is a file of the model: its content and its snapshots' content. The
// byte slices are never modified in place, so states can share them.
type scVol struct {
	data  []byte
	snaps map[string][]byte
}

// scState is what the mount must show under MOUNT/vols.
type scState map[string]*scVol

func (s scState) copy() scState {
	c := scState{}
	for n, v := range s {
		sn := map[string][]byte{}
		for k, b := range v.snaps {
			sn[k] = b
		}
		c[n] = &scVol{data: v.data, snaps: sn}
	}
	return c
}

// names lists the files of MOUNT/vols.
func (s scState) names() []string {
	var out []string
	for n := range s {
		if !strings.Contains(n, "/") {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// all lists every entry: the files of vols, and "tN/file" for the files of
// the directory clones MOUNT/trees/tN.
func (s scState) all() []string {
	var out []string
	for n := range s {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// trees lists the directory clones.
func (s scState) trees() []string {
	seen := map[string]bool{}
	var out []string
	for n := range s {
		if t, _, ok := strings.Cut(n, "/"); ok && !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

func (s scState) clones() []string {
	var out []string
	for _, n := range s.names() {
		if strings.HasPrefix(n, "c") {
			out = append(out, n)
		}
	}
	return out
}

// diffStates describes how got differs from want; empty when they are equal.
func diffStates(want, got scState) []string {
	var d []string
	for _, n := range want.all() {
		g, ok := got[n]
		if !ok {
			d = append(d, fmt.Sprintf("file %s missing", n))
			continue
		}
		w := want[n]
		if !bytes.Equal(w.data, g.data) {
			d = append(d, fmt.Sprintf("file %s: %s", n, diffBlocks(w.data, g.data)))
		}
		for s, wb := range w.snaps {
			gb, ok := g.snaps[s]
			if !ok {
				d = append(d, fmt.Sprintf("snapshot %s of %s missing", s, n))
			} else if !bytes.Equal(wb, gb) {
				d = append(d, fmt.Sprintf("snapshot %s of %s: %s", s, n, diffBlocks(wb, gb)))
			}
		}
		for s := range g.snaps {
			if _, ok := w.snaps[s]; !ok {
				d = append(d, fmt.Sprintf("snapshot %s of %s should not exist", s, n))
			}
		}
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			d = append(d, fmt.Sprintf("file %s should not exist", n))
		}
	}
	sort.Strings(d)
	return d
}

func diffBlocks(want, got []byte) string {
	if len(want) != len(got) {
		return fmt.Sprintf("%d bytes, want %d", len(got), len(want))
	}
	var bad []string
	for b := 0; b*blockSize < len(want); b++ {
		if !bytes.Equal(want[b*blockSize:(b+1)*blockSize], got[b*blockSize:(b+1)*blockSize]) {
			bad = append(bad, strconv.Itoa(b))
		}
	}
	if len(bad) > 8 {
		bad = append(bad[:8], fmt.Sprintf("... (%d blocks)", len(bad)))
	}
	return "blocks " + strings.Join(bad, ",") + " differ"
}

// readSCState reads MOUNT/vols, MOUNT/.snapshots/vols and MOUNT/trees.
func readSCState(m *Mount) (scState, error) {
	s := scState{}
	trees, err := os.ReadDir(m.Path("trees"))
	if err != nil {
		return nil, err
	}
	for _, tr := range trees {
		files, err := os.ReadDir(m.Path("trees", tr.Name()))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			b, err := os.ReadFile(m.Path("trees", tr.Name(), f.Name()))
			if err != nil {
				return nil, err
			}
			s[tr.Name()+"/"+f.Name()] = &scVol{data: b, snaps: map[string][]byte{}}
		}
	}
	ents, err := os.ReadDir(m.Path("vols"))
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		v := &scVol{snaps: map[string][]byte{}}
		if v.data, err = os.ReadFile(m.Path("vols", e.Name())); err != nil {
			return nil, err
		}
		sd := filepath.Join(m.Dir, ".snapshots", "vols", e.Name())
		snaps, err := os.ReadDir(sd)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("readdir %s: %w", sd, err)
		}
		for _, se := range snaps {
			if v.snaps[se.Name()], err = os.ReadFile(filepath.Join(sd, se.Name())); err != nil {
				return nil, err
			}
		}
		s[e.Name()] = v
	}
	return s, nil
}

// partialRemoval reports whether got is acked less some of the files under prefix.
func partialRemoval(acked, got scState, prefix string) bool {
	want := acked.copy()
	for _, n := range acked.all() {
		if _, ok := got[n]; !ok && strings.HasPrefix(n, prefix) {
			delete(want, n)
		}
	}
	return len(diffStates(want, got)) == 0
}

// scWorker runs operations until an operation fails; a failure after killed
// was set is the crash, any other is reported on errc.
type scWorker struct {
	m       *Mount
	rng     *rand.Rand
	acked   scState
	pending scState // the state if the operation in flight took effect; nil when none
	lastOp  string
	ops     int
	nextID  *int
	seq     *uint64
	killed  *atomic.Bool
	counts  map[string]int
}

func (w *scWorker) run(t *testing.T, errc chan<- error) {
	defer close(errc)
	for {
		next := w.acked.copy()
		op, do := w.pick(t, next)
		w.pending, w.lastOp = next, op
		if err := do(); err != nil {
			if !w.killed.Load() {
				errc <- fmt.Errorf("%s: %w", op, err)
			}
			return
		}
		w.acked, w.pending = next, nil
		w.ops++
		w.counts[strings.Fields(op)[0]]++
	}
}

// pick chooses an operation, applies its effect to next and returns what does it.
func (w *scWorker) pick(t *testing.T, next scState) (string, func() error) {
	cli := func(args ...string) func() error {
		return func() error {
			r := runVafsIn(t, "", 30*time.Second, args...)
			if r.code != 0 {
				return errors.New(r.String())
			}
			return nil
		}
	}
	vol := func(n string) string { return w.m.Path("vols", n) }
	names := next.names()
	clones := next.clones()
	var withSnaps []string
	for _, n := range names {
		if len(next[n].snaps) > 0 {
			withSnaps = append(withSnaps, n)
		}
	}
	anySnap := func(n string) string {
		var s []string
		for k := range next[n].snaps {
			s = append(s, k)
		}
		sort.Strings(s)
		return s[w.rng.IntN(len(s))]
	}
	for {
		switch w.rng.IntN(17) {
		case 0, 1, 2: // fsynced one-block write
			n := names[w.rng.IntN(len(names))]
			b := w.rng.IntN(scBlocks)
			*w.seq++
			rec := make([]byte, blockSize)
			makeRecord(rec, 1, b, *w.seq)
			d := append([]byte(nil), next[n].data...)
			copy(d[b*blockSize:], rec)
			next[n].data = d
			return fmt.Sprintf("write %s block %d seq %d", n, b, *w.seq), func() error {
				f, err := os.OpenFile(vol(n), os.O_WRONLY, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				if _, err := f.WriteAt(rec, int64(b)*blockSize); err != nil {
					return err
				}
				return f.Sync()
			}
		case 3, 4: // clone a file
			if len(clones) >= scMaxClone {
				continue
			}
			src := names[w.rng.IntN(len(names))]
			*w.nextID++
			dst := "c" + strconv.Itoa(*w.nextID)
			next[dst] = &scVol{data: next[src].data, snaps: map[string][]byte{}}
			return "clone " + src + " " + dst, cli("clone", vol(src), vol(dst))
		case 5: // clone a snapshot
			if len(clones) >= scMaxClone || len(withSnaps) == 0 {
				continue
			}
			src := withSnaps[w.rng.IntN(len(withSnaps))]
			s := anySnap(src)
			*w.nextID++
			dst := "c" + strconv.Itoa(*w.nextID)
			next[dst] = &scVol{data: next[src].snaps[s], snaps: map[string][]byte{}}
			return "clone-snapshot " + src + "@" + s + " " + dst, cli("clone", snapPath(w.m, "vols/"+src, s), vol(dst))
		case 6, 7, 8: // snapshot create
			n := names[w.rng.IntN(len(names))]
			if len(next[n].snaps) >= scMaxSnaps {
				continue
			}
			*w.nextID++
			s := "s" + strconv.Itoa(*w.nextID)
			next[n].snaps[s] = next[n].data
			return "snapshot-create " + n + " " + s, cli("snapshot", "create", vol(n), s)
		case 9, 10: // snapshot delete
			if len(withSnaps) == 0 {
				continue
			}
			n := withSnaps[w.rng.IntN(len(withSnaps))]
			s := anySnap(n)
			delete(next[n].snaps, s)
			return "snapshot-delete " + n + " " + s, cli("snapshot", "delete", vol(n), s)
		case 11, 12: // rollback
			if len(withSnaps) == 0 {
				continue
			}
			n := withSnaps[w.rng.IntN(len(withSnaps))]
			s := anySnap(n)
			next[n].data = next[n].snaps[s]
			// --force: the kernel sends FUSE_RELEASE after close(2) returns, so a
			// write op just before may still count as a writer for a moment.
			return "rollback " + n + " " + s, cli("snapshot", "rollback", "--force", vol(n), s)
		case 15: // clone the whole vols directory (files only: snapshots stay with their files)
			if len(next.trees()) >= 3 {
				continue
			}
			*w.nextID++
			tr := "t" + strconv.Itoa(*w.nextID)
			for _, n := range names {
				next[tr+"/"+n] = &scVol{data: next[n].data, snaps: map[string][]byte{}}
			}
			return "clone-dir vols " + tr, cli("clone", w.m.Path("vols"), w.m.Path("trees", tr))
		case 16: // rm -rf a directory clone (not atomic: a crash may leave part of it)
			trees := next.trees()
			if len(trees) == 0 {
				continue
			}
			tr := trees[w.rng.IntN(len(trees))]
			for _, n := range next.all() {
				if strings.HasPrefix(n, tr+"/") {
					delete(next, n)
				}
			}
			return "rm-tree " + tr, func() error {
				if err := os.RemoveAll(w.m.Path("trees", tr)); err != nil {
					return err
				}
				d, err := os.Open(w.m.Path("trees"))
				if err != nil {
					return err
				}
				defer d.Close()
				return d.Sync()
			}
		default: // rm a clone (and with it its snapshots)
			if len(clones) == 0 {
				continue
			}
			n := clones[w.rng.IntN(len(clones))]
			delete(next, n)
			return "rm " + n, func() error {
				if err := os.Remove(vol(n)); err != nil {
					return err
				}
				d, err := os.Open(w.m.Path("vols"))
				if err != nil {
					return err
				}
				defer d.Close()
				return d.Sync()
			}
		}
	}
}

// TestCrashSnapshotOps: SIGKILL of the mount while clone / snapshot create /
// delete / rollback / rm run; every acknowledged operation survives, the one in
// flight is all or nothing, and fsck is clean after every crash.
func TestCrashSnapshotOps(t *testing.T) {
	requireCommands(t, "clone", "snapshot")
	cycles := 10
	if s := os.Getenv("VAFS_SNAPCRASH_CYCLES"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			cycles = n
		}
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("VAFS_CRASH_SEED"); s != "" {
		if n, err := strconv.ParseUint(s, 10, 64); err == nil {
			seed = n
		}
	}
	t.Logf("seed %d (VAFS_CRASH_SEED), %d cycles (VAFS_SNAPCRASH_CYCLES)", seed, cycles)
	rng := rand.New(rand.NewPCG(seed, 0x5AC5))

	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	for _, d := range []string{"vols", "trees"} {
		if err := os.Mkdir(m.Path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	state := scState{}
	for i := 0; i < scBaseVols; i++ {
		n := "v" + strconv.Itoa(i)
		state[n] = &scVol{data: pattern(scFileSize, uint64(i+1), 0), snaps: map[string][]byte{}}
		writeFileSync(t, m.Path("vols", n), state[n].data)
	}
	fsyncDir(t, m.Path("vols"))
	nextID := 0
	var seq uint64
	counts := map[string]int{}
	inFlightKept, inFlightLost := 0, 0

	for cycle := 1; cycle <= cycles; cycle++ {
		var killed atomic.Bool
		w := &scWorker{m: m, rng: rand.New(rand.NewPCG(rng.Uint64(), uint64(cycle))), acked: state,
			nextID: &nextID, seq: &seq, killed: &killed, counts: counts}
		errc := make(chan error, 1)
		go w.run(t, errc)
		delay := time.Duration(200+rng.IntN(2300)) * time.Millisecond
		var werr error
		select {
		case werr = <-errc: // failed before the kill
		case <-time.After(delay):
		}
		killed.Store(true)
		m.Kill()
		select {
		case err, ok := <-errc:
			if ok && werr == nil {
				werr = err
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("cycle %d: the worker did not stop within 2 minutes of the kill (last op %q)", cycle, w.lastOp)
		}
		if werr != nil {
			t.Fatalf("cycle %d: operation failed before the kill: %v", cycle, werr)
		}
		detachDead(t, mnt)
		checkFsck(t, data)
		m = startMount(t, data, mnt)

		got, err := readSCState(m)
		if err != nil {
			t.Fatalf("cycle %d: reading the state after the crash: %v", cycle, err)
		}
		d := diffStates(w.acked, got)
		switch {
		case len(d) == 0:
			state = w.acked
			if w.pending != nil && len(diffStates(w.pending, got)) > 0 {
				inFlightLost++
			}
		case w.pending != nil && len(diffStates(w.pending, got)) == 0:
			state = w.pending
			inFlightKept++
		case strings.HasPrefix(w.lastOp, "rm-tree ") && partialRemoval(w.acked, got, strings.TrimPrefix(w.lastOp, "rm-tree ")+"/"):
			state = got // rm -rf was cut short: the files it had not removed yet are still whole
			inFlightKept++
		default:
			msg := fmt.Sprintf("cycle %d (killed after %v, %d operations acknowledged this cycle; in flight: %q):\nversus the acknowledged state:\n  %s",
				cycle, delay, w.ops, w.lastOp, strings.Join(d, "\n  "))
			if w.pending != nil {
				msg += "\nversus that state plus the operation in flight:\n  " + strings.Join(diffStates(w.pending, got), "\n  ")
			}
			t.Fatalf("%s", msg)
		}
		// The CLI agrees with the .snapshots directories.
		ns := state.names()
		for _, n := range ns[:min(3, len(ns))] {
			var want []string
			for s := range state[n].snaps {
				want = append(want, s)
			}
			if got := snapNames(snapList(t, m.Path("vols", n))); fmt.Sprint(sortedCopy(got)) != fmt.Sprint(sortedCopy(want)) {
				t.Errorf("cycle %d: snapshot list %s: %v, want %v", cycle, n, got, want)
			}
		}
		t.Logf("cycle %d: killed after %v: %d operations acknowledged, in flight %q; %d files",
			cycle, delay, w.ops, w.lastOp, len(state))
	}
	t.Logf("operations acknowledged: %v; in-flight operation found done %d times, not done %d times", counts, inFlightKept, inFlightLost)
	if counts["clone"]+counts["snapshot-create"]+counts["snapshot-delete"]+counts["rollback"]+counts["clone-dir"] == 0 {
		t.Errorf("no snapshot or clone operation was acknowledged in %d cycles", cycles)
	}
	m.Stop()
	checkFsck(t, data)
}
