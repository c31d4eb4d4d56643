package main

import "testing"

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
