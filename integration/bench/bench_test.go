package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSamples(t *testing.T) {
	s := samples{5 * time.Millisecond, 1 * time.Millisecond, 3 * time.Millisecond}
	if s.median() != 3*time.Millisecond || s.min() != time.Millisecond || s.max() != 5*time.Millisecond {
		t.Fatalf("median/min/max of %v = %v/%v/%v", s, s.median(), s.min(), s.max())
	}
	s = append(s, 7*time.Millisecond)
	if s.median() != 4*time.Millisecond {
		t.Fatalf("median of %v = %v, want 4ms", s, s.median())
	}
	if (samples{}).median() != 0 {
		t.Fatal("median of nothing is not 0")
	}
}

func TestParseFlagsSections(t *testing.T) {
	cfg, err := parseFlags([]string{"-quick", "-sections", "meta,clone", "-depths", "10,100"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.sections, ",") != "clone,meta" {
		t.Errorf("sections %v, want canonical order clone,meta", cfg.sections)
	}
	if cfg.out != "" {
		t.Errorf("a partial -quick run writes %q, want no report", cfg.out)
	}
	if len(cfg.depths) != 3 || cfg.depths[0] != 0 {
		t.Errorf("depths %v, want 0 added in front", cfg.depths)
	}
	if _, err := parseFlags([]string{"-sections", "nope"}); err == nil {
		t.Error("an unknown section was accepted")
	}
	cfg, err = parseFlags([]string{"-sections", "clone", "-out", "x.md", "-clone-sizes", "64M,1G"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(cfg.out, "/x.md") || len(cfg.cloneSizes) != 2 || cfg.cloneSizes[1] != 1<<30 {
		t.Errorf("out %q sizes %v", cfg.out, cfg.cloneSizes)
	}
}

func TestRoundWritesAreDistinctAndRepeatable(t *testing.T) {
	cfg := &config{size: 16 << 20, roundWrites: 64}
	offs, data := roundWrites(cfg, 7)
	offs2, data2 := roundWrites(cfg, 7)
	seen := map[int64]bool{}
	for i, off := range offs {
		if seen[off] || off%4096 != 0 || off+4096 > cfg.size {
			t.Fatalf("offset %d repeated, unaligned or out of range", off)
		}
		seen[off] = true
		if off != offs2[i] || !bytes.Equal(data[i], data2[i]) {
			t.Fatal("the same round wrote different blocks: vafs, control and qcow2 would differ")
		}
	}
	if len(offs) != 64 {
		t.Fatalf("%d writes, want 64", len(offs))
	}
}

// TestQcowChain grows a short chain through the builder, exports its top
// with a fresh daemon, and reads back what the last round wrote and what
// the base holds: the chain the depth section measures is the real one.
func TestQcowChain(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("skipping: needs /dev/fuse (%v)", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root: qemu-storage-daemon's FUSE export mounts")
	}
	for _, bin := range []string{"qemu-img", "qemu-io", "qemu-storage-daemon"} {
		if _, err := exec.LookPath(bin); err != nil {
			// `just setup` installs them, and CI (or `just test`, which sets
			// VAFS_BIN) must not pass without running this test.
			if os.Getenv("CI") != "" || os.Getenv("VAFS_BIN") != "" {
				t.Fatalf("needs %s, which is not installed (%v); a failure, not a skip, with CI or VAFS_BIN set", bin, err)
			}
			t.Skipf("skipping: needs %s, which is not installed (%v); `just setup` installs it", bin, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	var td teardown
	t.Cleanup(func() {
		if err := td.run(); err != nil {
			t.Error(err)
		}
	})
	cfg := &config{size: 16 << 20, roundWrites: 8}
	top := filepath.Join(dir, "base.qcow2")
	if err := fillQcow2(ctx, top, cfg.size); err != nil {
		t.Fatal(err)
	}
	sub := &teardown{}
	td.add("builder", sub.run)
	chain, err := openChain(ctx, dir, top, sub)
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 4
	var offs []int64
	var data [][]byte
	for r := 1; r <= rounds; r++ {
		offs, data = roundWrites(cfg, r)
		if err := chain.overlay(filepath.Join(dir, "ovl-"+string(rune('0'+r))+".qcow2"), "o"+string(rune('0'+r))); err != nil {
			t.Fatal(err)
		}
		if err := writeBlocks(chain.export, offs, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := sub.run(); err != nil {
		t.Fatal(err)
	}
	out, err := runCmd(ctx, time.Minute, "qemu-img", "info", "--backing-chain", chain.top)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, "image: "); n != rounds+1 {
		t.Fatalf("chain has %d images, want %d:\n%s", n, rounds+1, out)
	}

	mdir := filepath.Join(dir, "measure")
	if err := os.MkdirAll(mdir, 0o755); err != nil {
		t.Fatal(err)
	}
	export, err := exportQcow2(ctx, mdir, chain.top, "qsd (read back)", &td)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(export)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for i, off := range offs {
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, data[i]) {
			t.Fatalf("block at %d does not read back what the last round wrote", off)
		}
	}
	// A block no round wrote comes from the base, through the chain.
	written := map[int64]bool{}
	for r := 1; r <= rounds; r++ {
		o, _ := roundWrites(cfg, r)
		for _, off := range o {
			written[off] = true
		}
	}
	for off := int64(0); off < cfg.size; off += 4096 {
		if written[off] {
			continue
		}
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, bytes.Repeat([]byte{0x5a}, 4096)) {
			t.Fatalf("block at %d does not hold the base's pattern", off)
		}
		break
	}
}

func TestProcCounters(t *testing.T) {
	cpu0, _, err := procCounters(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the counter moves (it ticks every 10 ms).
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for {
		for i := 0; i < 1e6; i++ {
			x += i
		}
		cpu1, _, err := procCounters(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if cpu1 > cpu0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time did not move from %v in 5 s of spinning (x=%d)", cpu0, x)
		}
	}
	if pids := findByArg(os.Args[0], "/nonexistent/mount/point"); len(pids) != 0 {
		t.Fatalf("findByArg found processes %v serving a mount point that does not exist", pids)
	}
}
