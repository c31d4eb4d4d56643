package main

// The meta section: how much metadata (DATA/meta, the Pebble database) vafs
// keeps per byte of data. Sequential writes should collapse into runs (one
// tree entry for many blocks); random 4k writes cost one entry per block.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type metaCase struct {
	key, label string
	size       int64
	goal       float64 // metadata bytes per data byte, at most
	args       []string
}

func metaCases(cfg *config) []metaCase {
	return []metaCase{
		{"seq", "sequential 1M writes", cfg.metaSeq, 0.0005, fillArgs(cfg.metaSeq)},
		{"rand", "random 4k writes", cfg.metaRand, 0.005, []string{
			"--name=randwrite",
			"--rw=randwrite",
			"--bs=4k",
			"--ioengine=libaio",
			"--iodepth=16",
			"--direct=1",
			"--size=" + strconv.FormatInt(cfg.metaRand, 10),
			"--randrepeat=0",
			"--end_fsync=1",
		}},
	}
}

type metaResult struct {
	c        metaCase
	df       dfUsage // while mounted, after the writes
	dfOK     bool
	meta     int64 // du -sb DATA/meta after umount
	segments int64 // du -sb DATA/segments after umount
	err      error
}

func runMetaSection(ctx context.Context, cfg *config, td *teardown) (*sectionOut, error) {
	out := &sectionOut{title: "Metadata per data byte", method: metaMethod(cfg)}
	if err := checkCLI(ctx, cfg, "df"); err != nil {
		return out, err
	}
	var res []*metaResult
	var errs []error
	for _, c := range metaCases(cfg) {
		r := &metaResult{c: c}
		r.err = metaAt(ctx, cfg, td, r)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.label, r.err))
		}
		res = append(res, r)
	}
	out.results = renderMeta(res)
	return out, errors.Join(errs...)
}

func metaAt(ctx context.Context, cfg *config, td *teardown, r *metaResult) (err error) {
	dir := filepath.Join(cfg.workDir, "meta", r.c.key)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sub := &teardown{}
	td.add("meta "+r.c.key, sub.run)
	defer func() {
		if terr := sub.run(); terr != nil && err == nil {
			err = terr
		}
		if !cfg.keep {
			if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
				err = rerr
			}
		}
	}()
	m, err := mountVafs(ctx, cfg, filepath.Join(dir, "vafs"), "vafs (meta "+r.c.key+")", sub)
	if err != nil {
		return err
	}
	logf("meta: %s of %s", r.c.label, sizeString(r.c.size))
	if _, err := fioRun(ctx, dir, r.c.key, filepath.Join(m.mnt, "vol.raw"), r.c.args, 30*time.Minute); err != nil {
		return err
	}
	// Without df the figures after umount still stand; its error is
	// reported after them.
	var dfErr error
	if r.df, dfErr = vafsDF(ctx, cfg, m.mnt); dfErr == nil {
		r.dfOK = true
	}
	if err := m.unmount(); err != nil {
		return err
	}
	if r.meta, err = duBytes(ctx, filepath.Join(m.data, "meta")); err != nil {
		return err
	}
	if r.segments, err = duBytes(ctx, filepath.Join(m.data, "segments")); err != nil {
		return err
	}
	if dfErr != nil {
		return dfErr
	}
	// A figure per data byte needs all the data to be there.
	if r.df.Logical != r.c.size {
		return fmt.Errorf("vafs df says %d bytes are mapped after writing %d", r.df.Logical, r.c.size)
	}
	return nil
}

func metaMethod(cfg *config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "For each workload: a fresh vafs mount, one new file written by one fio job, then `vafs df --json MNT` "+
		"(its `metadata` is Pebble's own figure for its disk usage, while mounted), then `vafs umount` (which returns once the "+
		"mount process has flushed and exited) and `du -sb DATA/meta` (every file of the Pebble database: tables, WAL, "+
		"manifest) and `du -sb DATA/segments`. Figures per data byte divide by the bytes fio wrote, all of which the file "+
		"maps (checked against `vafs df`'s `logical`).\n\n")
	for _, c := range metaCases(cfg) {
		fmt.Fprintf(&b, "- %s, %s:\n\n      fio %s --filename=MNT/vol.raw\n\n", c.label, sizeString(c.size), strings.Join(c.args, " "))
	}
	fmt.Fprintf(&b, "The random job writes every 4 KiB block of the file once, in random order (fio's random map), so no "+
		"two neighbours are written one after the other.\n")
	return b.String()
}

func renderMeta(res []*metaResult) string {
	header := []string{"workload", "data written", "DATA/meta after umount", "per data byte", "goal",
		"df metadata (mounted)", "per data byte", "DATA/segments", "per data byte"}
	var body [][]string
	var goals []string
	for _, r := range res {
		line := []string{r.c.label, sizeString(r.c.size)}
		if r.err != nil && r.meta == 0 {
			line = append(line, "failed", "–", fmt.Sprintf("≤ %s", pct(r.c.goal)), "–", "–", "–", "–")
			body = append(body, line)
			goals = append(goals, fmt.Sprintf("%s: not measured", r.c.label))
			continue
		}
		per := float64(r.meta) / float64(r.c.size)
		line = append(line, bytesString(r.meta), pct(per), fmt.Sprintf("≤ %s", pct(r.c.goal)))
		if r.dfOK {
			line = append(line, bytesString(r.df.Metadata), pct(float64(r.df.Metadata)/float64(r.c.size)))
		} else {
			line = append(line, "failed", "–")
		}
		line = append(line, bytesString(r.segments), pct(float64(r.segments)/float64(r.c.size)))
		body = append(body, line)
		goals = append(goals, fmt.Sprintf("%s: %s (%s ≤ %s)", r.c.label, verdict(true, per <= r.c.goal), pct(per), pct(r.c.goal)))
	}
	var b strings.Builder
	b.WriteString(mdTable(header, body))
	fmt.Fprintf(&b, "\nGoals, on DATA/meta after umount: %s.\n", strings.Join(goals, "; "))
	for _, r := range res {
		if r.dfOK {
			fmt.Fprintf(&b, "\n%s: `vafs df`: logical %s, physical %s, stored %s in %d segments, metadata %s.",
				r.c.label, bytesString(r.df.Logical), bytesString(r.df.Physical), bytesString(r.df.Stored),
				r.df.Segments, bytesString(r.df.Metadata))
		}
	}
	b.WriteString("\n")
	return b.String()
}

// pct prints a fraction as a percentage with enough digits for 0.05%.
func pct(f float64) string {
	return fmt.Sprintf("%.4f%%", f*100)
}
