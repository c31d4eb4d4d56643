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
			if strings.HasPrefix(imp, mod+"cmd") {
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
