package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"
)

const (
	// engineName is the engine binary, cmd/vafsd.
	engineName = "vafsd"
	// engineEnv names the engine binary to use instead of looking for it
	// (tests, and installs that keep it elsewhere).
	engineEnv = "VAFS_ENGINE"
)

// runEngine hands the command to the engine: it replaces this process
// with vafsd and the same arguments, once urfave/cli has parsed them here
// (so --help is answered here, from the same definitions). The pid stays
// the same: `vafs mount` in the foreground, under systemd or a shell, is
// signalled and waited for as before. argv[0] stays too, so that ps and
// anything reading /proc/PID/cmdline still see `vafs mount ...` (the
// process name, comm, becomes vafsd).
func runEngine(c *cli.Context) error {
	path, err := enginePath()
	if err != nil {
		return err
	}
	argv := append([]string{os.Args[0]}, os.Args[1:]...)
	if err := syscall.Exec(path, argv, os.Environ()); err != nil {
		return fmt.Errorf("run the engine %s: %w", path, err)
	}
	return nil // not reached
}

// enginePath finds vafsd: $VAFS_ENGINE if set, else next to this
// executable (symlinks resolved, so an installed symlink to vafs finds
// the vafsd beside the real file), else in PATH.
func enginePath() (string, error) {
	if p := os.Getenv(engineEnv); p != "" {
		if !isExecutable(p) {
			return "", fmt.Errorf("%s=%s is not an executable file", engineEnv, p)
		}
		return p, nil
	}
	beside := "(unknown: " // where this executable is, for the message
	self, err := os.Executable()
	if err == nil {
		if s, err := filepath.EvalSymlinks(self); err == nil {
			self = s
		}
		p := filepath.Join(filepath.Dir(self), engineName)
		if isExecutable(p) {
			return p, nil
		}
		beside = p
	} else {
		beside += err.Error() + ")"
	}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		// Relative PATH entries are skipped, as os/exec does: the engine
		// runs as root and must not come from the working directory.
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		if p := filepath.Join(dir, engineName); isExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("this command needs the vafs engine %s, found neither at %s nor in PATH; install it next to vafs (`npx -y rust-just build` builds both into bin/) or set %s",
		engineName, beside, engineEnv)
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}
