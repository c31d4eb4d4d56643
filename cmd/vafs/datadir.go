package main

import (
	"os"
	"path/filepath"
)

// defaultDataDir is /var/lib/vafs for root, $XDG_DATA_HOME/vafs otherwise.
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/vafs"
	}
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "vafs")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "share", "vafs")
}
