package main

import (
	"log"
	"net"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
	"runtime"
	"strconv"
)

// pprofEnv, when set to a listen address (127.0.0.1:6060), makes a mount
// serve Go's /debug/pprof there, with mutex and block profiling on: how a
// slow path is found on a running mount (go tool pprof
// http://ADDR/debug/pprof/profile, .../mutex, .../block). Opt-in and off
// by default: profiling costs a little on every contended lock, and the
// endpoint answers anyone who can reach the address. An environment
// variable rather than a flag, so that it reaches the mount through
// `vafs mount --background` and the benchmarks' own mounts unchanged.
// VAFS_PPROF_RATE sets the block profile rate in ns (default 10000: one
// blocking event sampled per 10 µs blocked) and 1/fraction of mutex events.
const pprofEnv = "VAFS_PPROF"

func startPprof(lg *log.Logger) {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return
	}
	rate := 10000
	if v, err := strconv.Atoi(os.Getenv(pprofEnv + "_RATE")); err == nil && v > 0 {
		rate = v
	}
	runtime.SetBlockProfileRate(rate)
	runtime.SetMutexProfileFraction(10)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		lg.Printf("%s=%s: %v; no profiling", pprofEnv, addr, err)
		return
	}
	lg.Printf("pprof on http://%s/debug/pprof/", ln.Addr())
	go func() { _ = http.Serve(ln, nil) }()
}
