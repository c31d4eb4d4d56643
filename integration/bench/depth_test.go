package main

import "testing"

// TestDepthSchedule checks where the depth section's snapshots and
// overlays fall: d of each over the rounds, spread evenly, the last
// snapshot after the last round, each overlay right after the previous
// snapshot, so overlay k holds what snapshot k captured.
func TestDepthSchedule(t *testing.T) {
	for _, rounds := range []int{100, 1000, 7} {
		for _, d := range []int{0, 1, 3, 10, 100, 1000} {
			if d > rounds {
				continue
			}
			snaps, overlays := 0, 0
			lastSnap := 0
			for r := 1; r <= rounds; r++ {
				if overlayBefore(r, d, rounds) {
					overlays++
					if r != lastSnap+1 {
						t.Fatalf("rounds %d depth %d: overlay before round %d, last snapshot after round %d", rounds, d, r, lastSnap)
					}
				}
				if snapAfter(r, d, rounds) {
					snaps++
					if gap := r - lastSnap; gap < rounds/max(d, 1) || gap > (rounds+d-1)/max(d, 1) {
						t.Fatalf("rounds %d depth %d: snapshot after round %d, %d rounds after the previous", rounds, d, r, gap)
					}
					lastSnap = r
				}
			}
			if snaps != d || overlays != d {
				t.Fatalf("rounds %d depth %d: %d snapshots, %d overlays", rounds, d, snaps, overlays)
			}
			if d > 0 && lastSnap != rounds {
				t.Fatalf("rounds %d depth %d: last snapshot after round %d, not the last", rounds, d, lastSnap)
			}
		}
	}
}
