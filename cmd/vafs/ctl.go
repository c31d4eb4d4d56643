package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/vafs/vafs/cmd/internal/vafscli"
	"github.com/vafs/vafs/fs/control/wire"
)

// Helpers shared by the commands that talk to a running mount through its
// control socket (clone, snapshot, describe, df, compact).

// onVafs is a path located on a vafs mount.
type onVafs struct {
	mount   string // mount point
	dataDir string // the mount's source: its data dir
	rel     string // the path relative to the mount root, "" for the root
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	root, point, fstype, source string
}

// The mount table, read once per command: clone locates SRC and DST in
// the same table.
var (
	mountTab     []mountEntry
	mountTabErr  error
	mountTabRead bool
)

// mountTable returns /proc/self/mountinfo, parsed. It reads the file with
// plain system calls: an *os.File of /proc goes through the runtime
// poller, whose set-up (an epoll instance, an eventfd) a command that
// runs for a few milliseconds pays for nothing.
func mountTable() ([]mountEntry, error) {
	if !mountTabRead {
		var b []byte
		if b, mountTabErr = readProcFile("/proc/self/mountinfo"); mountTabErr == nil {
			mountTab = parseMountinfo(string(b))
		}
		mountTabRead = true
	}
	return mountTab, mountTabErr
}

// readProcFile reads a whole file of /proc; errors read like os.ReadFile's.
func readProcFile(path string) ([]byte, error) {
	var fd int
	var err error
	for {
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	b := make([]byte, 0, 16<<10)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := syscall.Read(fd, b[len(b):cap(b)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return b, nil
		}
		b = b[:len(b)+n]
	}
}

func parseMountinfo(s string) []mountEntry {
	var out []mountEntry
	for s != "" {
		var line string
		line, s, _ = strings.Cut(s, "\n")
		// id parent maj:min root point options [optional...] - fstype source superopts
		fl := strings.Fields(line)
		sep := -1
		for i := 6; i < len(fl); i++ {
			if fl[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(fl) || len(fl) < 5 {
			continue
		}
		out = append(out, mountEntry{root: vafscli.Unescape(fl[3]), point: vafscli.Unescape(fl[4]), fstype: fl[sep+1], source: vafscli.Unescape(fl[sep+2])})
	}
	return out
}

// under reports whether p is dir or below it.
func under(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// locateResolved finds the mount holding the absolute, symlink-free path
// p. The deepest mount point that is a prefix of p holds it (of any type:
// an ext4 mounted inside a vafs mount is not vafs); it must be fuse.vafs.
func locateResolved(p, arg string) (onVafs, error) {
	tab, err := mountTable()
	if err != nil {
		return onVafs{}, fmt.Errorf("cannot read the mount table: %w", err)
	}
	return pickMount(tab, p, arg)
}

func pickMount(tab []mountEntry, p, arg string) (onVafs, error) {
	best := -1
	for i, m := range tab {
		// >= : a later mount at the same point is stacked on top.
		if under(p, m.point) && (best < 0 || len(m.point) >= len(tab[best].point)) {
			best = i
		}
	}
	if best < 0 || tab[best].fstype != "fuse.vafs" {
		return onVafs{}, fmt.Errorf("%s is not on a vafs mount", arg)
	}
	m := tab[best]
	rest := strings.TrimPrefix(strings.TrimPrefix(p, m.point), "/")
	if m.point == "/" {
		rest = strings.TrimPrefix(p, "/")
	}
	// A bind mount of a directory of a vafs mount shows that directory
	// as its root.
	rel := strings.Trim(filepath.ToSlash(filepath.Join(strings.TrimPrefix(m.root, "/"), rest)), "/")
	if rel == "." {
		rel = ""
	}
	return onVafs{mount: m.point, dataDir: m.source, rel: rel}, nil
}

// evalExisting resolves the symlinks of the longest existing prefix of the
// absolute path p and appends the rest unchanged: a path that does not
// exist (or a snapshot path the kernel cannot look up) is still located on
// its mount, and the mount answers "no such file".
func evalExisting(p string) (string, error) {
	rest := ""
	for {
		r, err := evalSymlinks(p)
		if err == nil {
			return filepath.Join(r, rest), nil
		}
		if errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED) {
			return "", fmt.Errorf("%w (a vafs mount whose process died; vafs umount it and mount again)", err)
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return "", err
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = parent
	}
}

// oPath is O_PATH, which package syscall lacks; 010000000 on every Linux
// port of Go.
const oPath = 0x200000

// evalSymlinks is filepath.EvalSymlinks of the absolute, clean path p.
// The kernel resolves it in one walk, opened O_PATH, and names what it
// found in /proc/self/fd: EvalSymlinks lstats every component, and on a
// vafs mount each lstat whose attributes have expired is a round trip to
// the mount. Whenever that fails (no such path, no /proc, a name the
// kernel marks as deleted or unreachable), EvalSymlinks runs, so that
// every error is the one it reports.
func evalSymlinks(p string) (string, error) {
	fd, err := syscall.Open(p, oPath|syscall.O_CLOEXEC, 0)
	if err == nil {
		var buf [4096]byte
		n, rerr := syscall.Readlink("/proc/self/fd/"+strconv.Itoa(fd), buf[:])
		syscall.Close(fd)
		if rerr == nil && n > 0 && n < len(buf) {
			r := string(buf[:n])
			if r[0] == '/' && !strings.HasSuffix(r, " (deleted)") && filepath.Clean(r) == r {
				return r, nil
			}
		}
	}
	return filepath.EvalSymlinks(p)
}

// locate finds an existing path (FILE, SRC, PATH) on its vafs mount.
func locate(arg string) (onVafs, error) {
	abs, err := filepath.Abs(arg)
	if err != nil {
		return onVafs{}, err
	}
	p, err := evalExisting(abs)
	if err != nil {
		return onVafs{}, fmt.Errorf("%s: %w", arg, err)
	}
	return locateResolved(p, arg)
}

// locateNew finds a path to be created (DST): only its parent's symlinks
// are resolved, so that an existing DST symlink is refused as existing
// rather than followed.
func locateNew(arg string) (onVafs, error) {
	abs, err := filepath.Abs(arg)
	if err != nil {
		return onVafs{}, err
	}
	if abs == "/" {
		return onVafs{}, fmt.Errorf("%s: cannot create the root", arg)
	}
	dir, err := evalExisting(filepath.Dir(abs))
	if err != nil {
		return onVafs{}, fmt.Errorf("%s: %w", arg, err)
	}
	return locateResolved(filepath.Join(dir, filepath.Base(abs)), arg)
}

// vafsMounts lists the vafs mounts (for df without a PATH).
func vafsMounts() ([]onVafs, error) {
	tab, err := mountTable()
	if err != nil {
		return nil, err
	}
	var out []onVafs
	for _, m := range tab {
		if m.fstype == "fuse.vafs" {
			out = append(out, onVafs{mount: m.point, dataDir: m.source})
		}
	}
	return out, nil
}

// dial connects to the control socket of the mount holding at.
func dial(at onVafs) (*wire.Client, error) {
	return wire.Dial(at.dataDir)
}

// onMount finds the mount holding path, connects to it and calls fn; every
// error is prefixed with what (the command as the user typed it).
func onMount(path, what string, fn func(at onVafs, cl *wire.Client) error) error {
	at, err := locate(path)
	if err == nil {
		var cl *wire.Client
		if cl, err = dial(at); err == nil {
			err = fn(at, cl)
			cl.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// usageError is a usage error: exit status 2, with the command's usage
// line.
func usageError(c *cli.Context, format string, a ...interface{}) error {
	name := helpName(c)
	return cli.Exit(fmt.Sprintf("%s\nusage: %s %s (see %s --help)",
		fmt.Sprintf(format, a...), name, c.Command.ArgsUsage, name), 2)
}

// helpName is the command as typed: "vafs snapshot create".
func helpName(c *cli.Context) string {
	if c.Command.HelpName != "" {
		return c.Command.HelpName
	}
	return "vafs " + c.Command.Name
}

// onUsageError makes urfave/cli's flag errors (unknown flag, bad value)
// usage errors with exit status 2.
func onUsageError(c *cli.Context, err error, _ bool) error {
	return usageError(c, "%v", err)
}

// args returns the positional arguments, between min and max of them.
// urfave/cli stops parsing flags at the first argument; the documented
// forms put flags after it (`vafs snapshot list FILE --json`), so a known
// boolean flag among the arguments is set here and an unknown one is a
// usage error. After `--` every word is an argument.
func args(c *cli.Context, min, max int, bools ...string) ([]string, error) {
	dashdash := false
	for _, a := range os.Args[1:] {
		if a == "--" {
			dashdash = true
		}
	}
	var pos []string
	for _, a := range c.Args().Slice() {
		if dashdash || len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		known := false
		for _, b := range bools {
			if name == b {
				known = true
			}
		}
		if name == "help" || name == "h" {
			if err := cli.ShowSubcommandHelp(c); err != nil {
				return nil, err
			}
			return nil, cli.Exit("", 0)
		}
		if !known {
			return nil, usageError(c, "flag provided but not defined: %s", a)
		}
		if err := c.Set(name, "true"); err != nil {
			return nil, usageError(c, "%s: %v", a, err)
		}
	}
	if len(pos) < min || len(pos) > max {
		want := fmt.Sprintf("%d argument", min)
		switch {
		case max > min:
			want = fmt.Sprintf("%d to %d arguments", min, max)
		case min != 1:
			want += "s"
		}
		return nil, usageError(c, "%s takes %s (%s), got %d", strings.TrimPrefix(helpName(c), "vafs "), want, c.Command.ArgsUsage, len(pos))
	}
	return pos, nil
}

// human prints a byte count in binary units: "512 B", "1.0 GiB".
func human(b uint64) string {
	if b < 1024 {
		return fmt.Sprintf("%d B", b)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(b) / 1024
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
