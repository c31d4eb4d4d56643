package main

// Wall-clock timing of commands, as a user at a shell would see it: from
// fork to exit, process start-up included.

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// samples are the durations of repeated runs of one operation.
type samples []time.Duration

func (s samples) median() time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := append(samples(nil), s...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

func (s samples) min() time.Duration {
	m := time.Duration(0)
	for i, d := range s {
		if i == 0 || d < m {
			m = d
		}
	}
	return m
}

func (s samples) max() time.Duration {
	m := time.Duration(0)
	for _, d := range s {
		if d > m {
			m = d
		}
	}
	return m
}

// fmtDur prints a duration with three significant figures or so.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// timeRun runs a command and returns its wall-clock time.
func timeRun(ctx context.Context, timeout time.Duration, name string, args ...string) (time.Duration, error) {
	start := time.Now()
	_, err := runCmd(ctx, timeout, name, args...)
	return time.Since(start), err
}

// timeRunCPU is timeRun that also returns the CPU time (user + system)
// the process used: unlike the wall-clock time, it does not grow with
// the load other work puts on the machine.
func timeRunCPU(ctx context.Context, timeout time.Duration, name string, args ...string) (wall, cpu time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := command(ctx, name, args...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall = time.Since(start)
	if err != nil {
		return wall, 0, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, tail(string(out), 800))
	}
	return wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// repeat runs op (which times what it measures and returns that) up to max
// times, and no more once the runs, preparation included, have taken
// budget: a 10 GiB copy is run once or twice, a clone nine times. It
// stops at the first error.
func repeat(ctx context.Context, max int, budget time.Duration, op func(i int) (time.Duration, error)) (samples, error) {
	var s samples
	start := time.Now()
	for i := 0; i < max; i++ {
		if i > 0 && time.Since(start) > budget {
			break
		}
		if err := ctx.Err(); err != nil {
			return s, err
		}
		d, err := op(i)
		if err != nil {
			return s, err
		}
		s = append(s, d)
	}
	return s, nil
}

// checkCLI fails, with the reason, when the vafs binary lacks a command a
// section drives (docs/cli-snapshots.md): better than a failure after
// minutes of filling volumes.
func checkCLI(ctx context.Context, cfg *config, cmds ...string) error {
	for _, c := range cmds {
		if _, err := runCmd(ctx, 30*time.Second, cfg.vafsBin, "help", c); err != nil {
			return fmt.Errorf("%s has no `%s` command (docs/cli-snapshots.md); build it from a tree that has it: %v",
				cfg.vafsBin, c, err)
		}
	}
	return nil
}

// dfUsage is `vafs df --json` (docs/cli-snapshots.md), all bytes.
type dfUsage struct {
	Files           int64 `json:"files"`
	Snapshots       int64 `json:"snapshots"`
	Logical         int64 `json:"logical"`
	SnapshotLogical int64 `json:"snapshot_logical"`
	Physical        int64 `json:"physical"`
	Saved           int64 `json:"saved"`
	Stored          int64 `json:"stored"`
	Metadata        int64 `json:"metadata"`
	Segments        int64 `json:"segments"`
}

func vafsDF(ctx context.Context, cfg *config, path string) (dfUsage, error) {
	out, err := runCmd(ctx, time.Minute, cfg.vafsBin, "df", "--json", path)
	if err != nil {
		return dfUsage{}, err
	}
	var u dfUsage
	if err := json.Unmarshal([]byte(jsonPart(out)), &u); err != nil {
		return dfUsage{}, fmt.Errorf("vafs df --json: %w: %s", err, tail(out, 300))
	}
	return u, nil
}

// jsonPart drops anything printed before the JSON value (a warning).
func jsonPart(s string) string {
	if i := strings.IndexAny(s, "{["); i > 0 {
		return s[i:]
	}
	return s
}
