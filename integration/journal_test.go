package integration

import (
	"bytes"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var journalLineRE = regexp.MustCompile(`JOURNAL: (\d+) fsync journal records \((\d+) blocks\)`)

// TestFsyncJournalAfterKill: small writes each followed by an fsync are
// made durable by fsync journal records (one synced metadata record each,
// docs/format.md "The fsync journal"). After a SIGKILL with the file still
// open, `vafs fsck` reports the records left (and changes nothing), the
// next mount applies them (its log says how many), and the file holds
// every acknowledged write.
func TestFsyncJournalAfterKill(t *testing.T) {
	requireRoot(t)
	data, mnt := newDirs(t)
	m := startMount(t, data, mnt)
	f, err := os.OpenFile(m.Path("db.img"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	const size = 16 * MiB
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	fsync(t, f)
	fsyncDir(t, mnt)
	want := make([]byte, size)
	rng := rand.New(rand.NewPCG(5, 7))
	for i := range 40 {
		off := int64(rng.IntN(size/4096)) * 4096
		p := pattern(4096, uint64(100+i), off)
		writeAt(t, f, p, off)
		fsync(t, f)
		copy(want[off:], p)
	}
	m.Kill()
	f.Close()
	detachDead(t, mnt)

	before := treeState(t, data)
	out, err := vafs(t, 2*time.Minute, "fsck", "--data", data)
	if err != nil || !strings.Contains(out, "clean") {
		t.Fatalf("fsck: %v, want exit 0 and clean:\n%s", err, out)
	}
	sameTree(t, "fsck", before, treeState(t, data))
	mm := journalLineRE.FindStringSubmatch(out)
	if mm == nil {
		t.Fatalf("fsck reports no fsync journal records after 40 small fsyncs and a SIGKILL:\n%s", out)
	}
	records, _ := strconv.Atoi(mm[1])
	if records < 10 {
		t.Fatalf("fsck reports %d journal records, want most of the 40 fsyncs'", records)
	}

	m = startMount(t, data, mnt)
	defer m.Stop()
	if !strings.Contains(m.Log(), "applied "+mm[1]+" fsync journal records") {
		t.Errorf("the mount's log does not say it applied %s journal records:\n%s", mm[1], m.Log())
	}
	got, err := os.ReadFile(m.Path("db.img"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("after the SIGKILL the file is not what fsync acknowledged (size %d, first difference at byte %d)", len(got), i)
	}
}
