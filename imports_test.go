package vafs_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestForbiddenImports keeps the arrows pointing down (DESIGN.md):
// only fs/fuse imports go-fuse; meta and blocks never import each other or
// anything above them; fs never imports cachessd or cluster; nothing
// imports cmd.
func TestForbiddenImports(t *testing.T) {
	const mod = "github.com/vafs/vafs/"
	out, err := exec.Command("go", "list", "-deps=false", "-f", "{{.ImportPath}} {{join .Imports \" \"}} {{join .TestImports \" \"}}", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := map[string][]string{
		"meta":     {mod + "blocks", mod + "fs", mod + "cluster", mod + "cachessd", mod + "cmd"},
		"blocks":   {mod + "meta", mod + "fs", mod + "cluster", mod + "cachessd", mod + "cmd"},
		"fs":       {mod + "cachessd", mod + "cluster", mod + "cmd", "github.com/hanwen/go-fuse"},
		"cachessd": {mod + "meta", mod + "fs", mod + "cluster", mod + "cmd", "github.com/hanwen/go-fuse"},
		"cluster":  {mod + "meta", mod + "fs", mod + "cachessd", mod + "cmd", "github.com/hanwen/go-fuse"},
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		pkg, imports := strings.TrimPrefix(f[0], mod), f[1:]
		checked++
		for _, imp := range imports {
			if strings.HasPrefix(imp, mod+"cmd") && !strings.HasPrefix(pkg, "cmd/") {
				t.Errorf("%s imports %s: nothing imports cmd", pkg, imp)
			}
			if strings.HasPrefix(imp, "github.com/hanwen/go-fuse") && pkg != "fs/fuse" && pkg != "integration" {
				t.Errorf("%s imports %s: only fs/fuse may import go-fuse", pkg, imp)
			}
			top := strings.SplitN(pkg, "/", 2)[0]
			if pkg == "fs/fuse" {
				continue
			}
			for _, bad := range forbidden[top] {
				if strings.HasPrefix(imp, bad) && !strings.HasPrefix(imp, mod+top+"/") {
					t.Errorf("%s imports %s", pkg, imp)
				}
			}
		}
	}
	if checked < 6 {
		t.Fatalf("only %d packages listed", checked)
	}
}

// TestThinClientDeps keeps cmd/vafs thin: every package it links runs its
// initialisation at each start, and `vafs clone` must start in a few
// milliseconds (a clone is a millisecond of work in the mount). It may
// link the standard library, urfave/cli, msgpack, the control socket's
// client (and its msgpack check) and the shared command definitions; anything that opens a data
// dir or mounts (Pebble, go-fuse, prometheus, fs, meta, blocks, cachessd,
// the fs/control server) belongs to the engine, cmd/vafsd.
func TestThinClientDeps(t *testing.T) {
	const mod = "github.com/vafs/vafs/"
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", "./cmd/vafs").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := []string{
		mod + "cmd/vafs", mod + "cmd/internal/", mod + "fs/control/wire",
		mod + "internal/msgpackcheck",                           // the frame check wire shares with meta: the standard library only
		"github.com/urfave/cli/v2", "github.com/xrash/smetrics", // and, without -tags urfave_cli_no_docs:
		"github.com/cpuguy83/go-md2man/", "github.com/russross/blackfriday/",
		"github.com/vmihailenco/msgpack/", "github.com/vmihailenco/tagparser/",
	}
	sawWire := false
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || f[1] == "true" || strings.HasPrefix(f[0], "vendor/") {
			continue
		}
		sawWire = sawWire || f[0] == mod+"fs/control/wire"
		ok := false
		for _, a := range allowed {
			ok = ok || f[0] == a || (strings.HasSuffix(a, "/") && strings.HasPrefix(f[0], a))
		}
		if !ok {
			t.Errorf("cmd/vafs links %s: the thin client must not (engine code goes in cmd/vafsd)", f[0])
		}
	}
	if !sawWire {
		t.Fatalf("go list -deps ./cmd/vafs does not list fs/control/wire:\n%s", out)
	}
}
