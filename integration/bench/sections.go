package main

// The report's sections. Each measures on its own, under its own directory
// of the work directory, one after the other; a section that fails is
// reported as such and the next one still runs.

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// sectionOut is what one section contributes to the report.
type sectionOut struct {
	name    string
	title   string // the Markdown heading
	method  string // Markdown: what was measured and how
	results string // Markdown tables and notes; also printed on the terminal
	err     error  // the section failed or measured only in part (results may be partial)
}

type sectionFunc func(ctx context.Context, cfg *config, td *teardown) (*sectionOut, error)

var sections = map[string]sectionFunc{
	"fio":       runFioSection,
	"clone":     runCloneSection,
	"depth":     runDepthSection,
	"meta":      runMetaSection,
	"isolation": runIsolationSection,
}

// runFioSection is the side-by-side fio table: every target is set up and
// prefilled, then each row runs on each target in turn.
func runFioSection(ctx context.Context, cfg *config, td *teardown) (*sectionOut, error) {
	var ready []*target
	failed := map[string]string{}
	for _, name := range cfg.targets {
		t := newTarget(name, cfg)
		t.dir = filepath.Join(cfg.workDir, "fio", name)
		logf("setting up %s", name)
		if err := t.setup(ctx, td); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			logf("%s: not measured: %v", name, err)
			failed[name] = err.Error()
			continue
		}
		ready = append(ready, t)
	}
	if len(ready) == 0 {
		return renderFio(cfg, results{}, failed), errors.New("no target could be set up")
	}

	files := 1 // files per target: as many as the row of most jobs runs
	for _, r := range cfg.rows {
		files = max(files, r.numJobs())
	}
	for _, t := range ready {
		logf("prefilling %s (%d × %s sequential write)", t.name, files, sizeString(cfg.size))
		if err := prefillFiles(ctx, cfg, t, td, files); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			logf("%s: not measured: prefill: %v", t.name, err)
			failed[t.name] = "prefill: " + err.Error()
			t.broken = true
		}
	}

	res := results{}
	for _, r := range cfg.rows {
		for _, t := range ready {
			if t.broken {
				continue
			}
			logf("%-22s %s", r.label(), t.name)
			m, err := runJob(ctx, cfg, t, r)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				logf("%s: %s failed: %v", t.name, r.label(), err)
				res.set(r, t.name, measurement{err: err})
				continue
			}
			res.set(r, t.name, m)
		}
	}
	out := renderFio(cfg, res, failed)
	if len(failed) != 0 || res.anyError() {
		names := make([]string, 0, len(failed))
		for n := range failed {
			names = append(names, n)
		}
		sort.Strings(names)
		if len(names) == 0 {
			return out, errors.New("some jobs failed; see above")
		}
		return out, fmt.Errorf("targets %s not measured; see above", strings.Join(names, ", "))
	}
	return out, nil
}

// prefillFiles makes t's files up to n and prefills every one of them.
func prefillFiles(ctx context.Context, cfg *config, t *target, td *teardown, n int) error {
	if err := prefill(ctx, cfg, t); err != nil {
		return err
	}
	if err := t.addFiles(ctx, td, n); err != nil {
		return err
	}
	for i, f := range t.files[1:] {
		if _, err := fioRun(ctx, t.dir, fmt.Sprintf("prefill-%d", i+1), f, prefillArgs(cfg), 30*time.Minute); err != nil {
			return err
		}
	}
	return nil
}
