package main

import (
	"testing"
	"time"
)

func TestParseCacheSize(t *testing.T) {
	for in, want := range map[string]int64{
		"auto": 0, "": 0, "0": -1, "off": -1, "OFF": -1,
		"4096": 4096, "512M": 512 << 20, "512MiB": 512 << 20, "2g": 2 << 30, "2GB": 2 << 30, "1T": 1 << 40, "64k": 64 << 10,
	} {
		got, err := parseCacheSize(in)
		if err != nil || got != want {
			t.Errorf("parseCacheSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "lots", "2X", "G", "1.5G", "99999999P"} {
		if got, err := parseCacheSize(in); err == nil {
			t.Errorf("parseCacheSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseDirtyExpire(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"auto": 0, "AUTO": 0, "": 0, "30s": 30 * time.Second, "2m": 2 * time.Minute, "1500ms": 1500 * time.Millisecond,
	} {
		got, err := parseDirtyExpire(in)
		if err != nil || got != want {
			t.Errorf("parseDirtyExpire(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"0s", "-5s", "30", "soon", "10ms"} {
		if got, err := parseDirtyExpire(in); err == nil {
			t.Errorf("parseDirtyExpire(%q) = %v, want an error", in, got)
		}
	}
}
