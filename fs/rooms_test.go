package fs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// The rooms of package fs (doc.go, "Rooms"): each file belongs to one, and
// a room calls only into the rooms below it. TestRoomsCallDown checks the
// calls it can resolve without type checking: package functions, methods
// of *FS called on the receiver, and methods of the write cache called as
// x.c.M (volCache) and x.wc.M (wcache).
var rooms = map[string][]string{
	"lifecycle": {"fs.go", "check.go", "errors.go", "metrics.go", "doc.go"},
	"namespace": {"namespace.go"},
	"snapshot":  {"snapshot.go"},
	"volume":    {"volume.go"},
	"space":     {"compact.go", "sweep.go", "usage.go"},
	"commit":    {"commit.go", "mempressure.go"},
	"cache":     {"wcache.go", "journal.go"},
	"store":     {"store.go", "class.go"},
}

// below lists, for each room, the rooms it may call (besides itself).
var below = map[string][]string{
	"lifecycle": {"namespace", "snapshot", "volume", "space", "commit", "cache", "store"},
	"namespace": {"volume", "commit", "cache", "store"},
	"snapshot":  {"namespace", "volume", "commit", "cache", "store"},
	"space":     {"namespace", "snapshot", "volume", "commit", "cache", "store"},
	"volume":    {"commit", "cache", "store"},
	"commit":    {"cache", "store"},
	"cache":     {"store"},
	"store":     {},
}

// callEdges returns, for every call from one file of the package to a
// function or method declared in another, "from -> to: name".
func callEdges(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	pkg := pkgs["fs"]
	if pkg == nil {
		t.Fatal("package fs not found")
	}
	decl := map[string]string{} // "Type.name" or "name" -> file
	recvType := func(fd *ast.FuncDecl) string {
		if fd.Recv == nil || len(fd.Recv.List) == 0 {
			return ""
		}
		x := fd.Recv.List[0].Type
		if s, ok := x.(*ast.StarExpr); ok {
			x = s.X
		}
		if id, ok := x.(*ast.Ident); ok {
			return id.Name
		}
		return "?"
	}
	for name, f := range pkg.Files {
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok {
				k := fd.Name.Name
				if r := recvType(fd); r != "" {
					k = r + "." + k
				}
				decl[k] = filepath.Base(name)
			}
		}
	}
	seen := map[string]bool{}
	for name, f := range pkg.Files {
		from := filepath.Base(name)
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			recv := ""
			if recvType(fd) == "FS" && len(fd.Recv.List[0].Names) > 0 {
				recv = fd.Recv.List[0].Names[0].Name
			}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				c, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				key := ""
				switch x := c.Fun.(type) {
				case *ast.Ident:
					key = x.Name
				case *ast.SelectorExpr:
					switch y := x.X.(type) {
					case *ast.Ident:
						if recv != "" && y.Name == recv {
							key = "FS." + x.Sel.Name
						}
					case *ast.SelectorExpr:
						switch y.Sel.Name {
						case "c":
							key = "volCache." + x.Sel.Name
						case "wc":
							key = "wcache." + x.Sel.Name
						}
					}
				}
				if to, ok := decl[key]; ok && to != from {
					e := from + " -> " + to + ": " + key
					if !seen[e] {
						seen[e] = true
					}
				}
				return true
			})
		}
	}
	out := make([]string, 0, len(seen))
	for e := range seen {
		out = append(out, e)
	}
	sort.Strings(out)
	return out
}

// TestRoomsCallDown: no call goes up or sideways between rooms, and every
// file of the package is in a room.
func TestRoomsCallDown(t *testing.T) {
	roomOf := map[string]string{}
	for r, files := range rooms {
		for _, f := range files {
			roomOf[f] = r
		}
	}
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if !strings.HasSuffix(n, "_test.go") && roomOf[n] == "" {
			t.Errorf("%s is in no room: add it to rooms (rooms_test.go) and doc.go", n)
		}
	}
	edges := callEdges(t)
	if len(edges) < 20 {
		t.Fatalf("only %d calls between files resolved: the check is not looking", len(edges))
	}
	for _, e := range edges {
		from, rest, _ := strings.Cut(e, " -> ")
		to, _, _ := strings.Cut(rest, ": ")
		rf, rt := roomOf[from], roomOf[to]
		if rf == rt {
			continue
		}
		if !slices.Contains(below[rf], rt) {
			t.Errorf("%s: room %s calls up or sideways into room %s", e, rf, rt)
		}
	}
}
