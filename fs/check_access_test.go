package fs

import "github.com/vafs/vafs/blocks"

// What the fsck and sweep tests read from a CheckReport, in one place, so
// that the tests can be run against the fs before fsck reported these
// (with this file replaced by stubs) to show that they fail there.

func unreferenced(rep *CheckReport) []StraySegment { return rep.Unreferenced }

func missing(rep *CheckReport) map[blocks.SegmentID]uint64 { return rep.Missing }

func repairs(rep *CheckReport) []string { return rep.Repairs }
