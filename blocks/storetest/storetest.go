// Package storetest is the conformance suite every blocks.Store passes.
package storetest

import (
	"bytes"
	"errors"
	"io"
	"sort"
	"testing"

	"github.com/vafs/vafs/blocks"
)

// Run runs the suite; newStore returns an empty store for each subtest.
func Run(t *testing.T, newStore func(t *testing.T) blocks.Store) {
	t.Run("CreateWriteReadSync", func(t *testing.T) {
		s := newStore(t)
		f, err := s.Create(7)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("hello"), 10); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if sz, err := f.Size(); err != nil || sz != 15 {
			t.Fatalf("size %d, %v; want 15", sz, err)
		}
		f.Close()
		g, err := s.Open(7)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		buf := make([]byte, 5)
		if _, err := g.ReadAt(buf, 10); err != nil || string(buf) != "hello" {
			t.Fatalf("read %q, %v", buf, err)
		}
		zero := make([]byte, 10)
		if _, err := g.ReadAt(zero, 0); err != nil || !bytes.Equal(zero, make([]byte, 10)) {
			t.Fatalf("gap read %v, %v", zero, err)
		}
		n, err := g.ReadAt(make([]byte, 10), 12)
		if n != 3 || !errors.Is(err, io.EOF) {
			t.Fatalf("read past end: n=%d err=%v; want 3, EOF", n, err)
		}
	})
	t.Run("CreateExists", func(t *testing.T) {
		s := newStore(t)
		f, err := s.Create(1)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if _, err := s.Create(1); !errors.Is(err, blocks.ErrExists) {
			t.Fatalf("second create: %v; want ErrExists", err)
		}
	})
	t.Run("OpenMissing", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Open(42); !errors.Is(err, blocks.ErrNotFound) {
			t.Fatalf("open missing: %v; want ErrNotFound", err)
		}
	})
	t.Run("RemoveIdempotentAndList", func(t *testing.T) {
		s := newStore(t)
		for _, id := range []blocks.SegmentID{3, 1, 2} {
			f, err := s.Create(id)
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		if err := s.Remove(2); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(2); err != nil {
			t.Fatalf("second remove: %v; want nil", err)
		}
		ids, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		if len(ids) != 2 || ids[0] != 1 || ids[1] != 3 {
			t.Fatalf("list %v; want [1 3]", ids)
		}
		if _, err := s.Open(2); !errors.Is(err, blocks.ErrNotFound) {
			t.Fatalf("open removed: %v", err)
		}
	})
	t.Run("Space", func(t *testing.T) {
		s := newStore(t)
		total, free, err := s.Space()
		if err != nil || total == 0 || free > total {
			t.Fatalf("space total=%d free=%d err=%v", total, free, err)
		}
	})
}
