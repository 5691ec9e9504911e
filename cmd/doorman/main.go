// Command doorman is the Doorman mail proxy daemon.
//
//	doorman -c /etc/doorman/doorman.yaml     run
//	doorman -c FILE -t                       check the configuration and exit
//
// SIGHUP re-reads the configuration file, the passdb files and the certificates without
// touching a session: what can change live (login_trusted_networks, auth_failure_delay,
// login_proxy_timeout, login_proxy_max_reconnects, log.level) applies at once, and the log
// names the changed keys that need a restart; a file that does not load or validate keeps
// the old configuration and every error is logged. SIGUSR1 runs a garbage collection,
// returns free memory to the kernel and logs the memory figures (for measuring
// per-session cost). SIGTERM and SIGINT stop gracefully: the listeners close at once,
// relayed sessions may go on for up to shutdown_timeout, and those left then are
// disconnected spread over shutdown_spread; a second SIGTERM or SIGINT disconnects them
// at once.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"doorman/engine"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("doorman", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "/etc/doorman/doorman.yaml", "configuration file")
	check := fs.Bool("t", false, "check the configuration and exit")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (for developers)")
	memProfile := fs.String("memprofile", "", "on SIGUSR1, also write a heap profile to this file (for developers)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := engine.LoadConfig(*path)
	if err != nil {
		fmt.Fprintf(stderr, "doorman: %v\n", err)
		return 1
	}
	if *check {
		fmt.Fprintf(stdout, "doorman: configuration %s is valid\n", *path)
		return 0
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// A P for each event loop's blocking epoll_wait, on top of the CPUs for the
		// rest (engine.EventLoops says why). Measured at 1,000 logins/s on 2 CPUs:
		// sysmon's share of the CPU went from 18% to under 1% (bench/RESULTS.md).
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + engine.EventLoops())
	}
	level := zap.NewAtomicLevel()
	log, err := newLogger(cfg.Log, level)
	if err != nil {
		fmt.Fprintf(stderr, "doorman: %v\n", err)
		return 1
	}
	defer log.Sync()

	if *memProfile != "" {
		runtime.MemProfileRate = 1 // every allocation: slow, but the profile is exact
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "doorman: %v\n", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "doorman: %v\n", err)
			return 1
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	srv, err := engine.New(cfg, log)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	if err := srv.Start(); err != nil {
		log.Error("cannot listen", zap.Error(err))
		return 1
	}
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGINT, syscall.SIGTERM)
	for s := range sig {
		if s == syscall.SIGUSR1 {
			logMemory(log, srv, *memProfile)
			continue
		}
		if s == syscall.SIGHUP {
			reload(log, srv, *path, level)
			continue
		}
		log.Info("stopping", zap.String("signal", s.String()))
		break
	}
	// A second SIGTERM or SIGINT cuts the graceful shutdown short.
	ctx, hurry := context.WithCancel(context.Background())
	defer hurry()
	go func() {
		for s := range sig {
			if s == syscall.SIGTERM || s == syscall.SIGINT {
				log.Warn("second signal: disconnecting the remaining sessions now", zap.String("signal", s.String()))
				hurry()
				return
			}
		}
	}()
	if err := srv.Shutdown(ctx); err != nil {
		log.Error("stop", zap.Error(err))
		return 1
	}
	log.Info("stopped")
	return 0
}

// reload is SIGHUP: the configuration file read and validated again, then applied as far
// as it can be without a restart. A bad file changes nothing.
func reload(log *zap.Logger, srv *engine.Server, path string, level zap.AtomicLevel) {
	next, err := engine.LoadConfig(path)
	if err != nil {
		// Validate reports every error, one per line.
		for _, line := range strings.Split(err.Error(), "\n") {
			log.Error("reload: the configuration file has errors; the old configuration stays", zap.String("error", line))
		}
		if err := srv.Reload(); err != nil {
			log.Error("reload failed; the old passdb contents and certificates stay", zap.Error(err))
		} else {
			log.Info("passdb files and certificates reloaded")
		}
		return
	}
	restart, err := srv.ReloadConfig(next)
	if err != nil {
		log.Error("reload failed in part; what failed keeps its old contents", zap.Error(err))
	}
	var l zapcore.Level
	if e := l.Set(next.Log.Level); e == nil && l != level.Level() {
		log.Info("log level changed", zap.String("level", l.String()))
		level.SetLevel(l)
	}
	if len(restart) > 0 {
		log.Warn("reload: these changed keys take effect only after a restart", zap.Strings("keys", restart))
	}
	if err == nil {
		log.Info("configuration reloaded", zap.String("file", path))
	}
}

func logMemory(log *zap.Logger, srv *engine.Server, heapProfile string) {
	runtime.GC()
	debug.FreeOSMemory()
	if heapProfile != "" {
		if f, err := os.Create(heapProfile); err != nil {
			log.Error("heap profile", zap.Error(err))
		} else {
			_ = pprof.WriteHeapProfile(f)
			_ = f.Close()
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	c := srv.Counters()
	rc := srv.RelayCounters()
	// Warn level: the operator asked for it with a signal, so it shows at any log level.
	// Every class of the runtime's memory, so a growth can be told apart (heap objects,
	// fragmentation, stacks, GC metadata, ...).
	var classes []zap.Field
	for _, d := range metrics.All() {
		if strings.HasPrefix(d.Name, "/memory/classes/") {
			sm := []metrics.Sample{{Name: d.Name}}
			metrics.Read(sm)
			if sm[0].Value.Kind() == metrics.KindUint64 {
				classes = append(classes, zap.Uint64(strings.TrimSuffix(strings.TrimPrefix(d.Name, "/memory/classes/"), ":bytes"), sm[0].Value.Uint64()))
			}
		}
	}
	log.Warn("memory", append(classes,
		zap.Uint64("heap_inuse", ms.HeapInuse),
		zap.Uint64("stack_inuse", ms.StackInuse),
		zap.Uint64("sys", ms.Sys),
		zap.Int("goroutines", runtime.NumGoroutine()),
		zap.Int64("login_phase", c.Active.Load()),
		zap.Int64("relaying", c.Relaying.Load()),
		zap.Int64("pipes_in_use", rc.PipesInUse),
		zap.Int64("pipes_idle", rc.PipesIdle),
	)...)
}

// newLogger builds the daemon's logger at lc.Level, through level (which a reload changes).
func newLogger(lc engine.LogConfig, level zap.AtomicLevel) (*zap.Logger, error) {
	var l zapcore.Level
	if err := l.Set(lc.Level); err != nil {
		return nil, err
	}
	level.SetLevel(l)
	zc := zap.NewProductionConfig()
	if lc.Format == "console" {
		zc = zap.NewDevelopmentConfig()
	}
	zc.Level = level
	zc.Sampling = nil // one line per session end is a promise: never sample it away
	zc.DisableStacktrace = true
	return zc.Build()
}
