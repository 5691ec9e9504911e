// Package loadutil holds what the bench tools share: client source addresses, a process's
// CPU time from /proc, users files, error texts for reports, and the dialer's
// IP_BIND_ADDRESS_NO_PORT.
package loadutil

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ParseSourceIPs reads "127.0.1.1-127.0.1.50,127.0.2.1" into a list of addresses.
func ParseSourceIPs(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := netip.ParseAddr(strings.TrimSpace(lo))
		if err != nil {
			return nil, err
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b, err := netip.ParseAddr(strings.TrimSpace(hi))
		if err != nil {
			return nil, err
		}
		if b.Less(a) || a.Is4() != b.Is4() {
			return nil, fmt.Errorf("bad range %q", part)
		}
		for x := a; ; x = x.Next() {
			out = append(out, x)
			if x == b {
				break
			}
			if len(out) > 1<<16 {
				return nil, fmt.Errorf("range %q too large", part)
			}
		}
	}
	return out, nil
}

// CPUOf returns the summed utime+stime of pids in clock ticks and the sum of their threads'
// run time in ns.
func CPUOf(pids []int) (ticks, runNs int64, err error) {
	for _, pid := range pids {
		t, n, err := CPUOfOne(pid)
		if err != nil {
			return 0, 0, err
		}
		ticks += t
		runNs += n
	}
	return ticks, runNs, nil
}

// CPUOfOne returns pid's utime+stime in clock ticks and the sum of its threads' run time in ns.
func CPUOfOne(pid int) (ticks, runNs int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, errors.New("unexpected /proc/PID/stat format")
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state); utime is field 14, stime 15
	if len(f) < 13 {
		return 0, 0, errors.New("short /proc/PID/stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, errors.New("bad utime/stime in /proc/PID/stat")
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // thread exited
		}
		if fs := strings.Fields(string(b)); len(fs) > 0 {
			if v, err := strconv.ParseInt(fs[0], 10, 64); err == nil {
				runNs += v
			}
		}
	}
	return ut + st, runNs, nil
}

// Account is one line of a users file.
type Account struct{ User, Pass string }

// ReadUsers reads a users file: `user:password` (or `user password`) lines; blank lines and
// lines starting with # are skipped, a line without a password is an error.
func ReadUsers(path string) ([]Account, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []Account
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		u, p, ok := strings.Cut(line, ":")
		if !ok {
			u, p, ok = strings.Cut(line, " ")
		}
		if !ok {
			return nil, fmt.Errorf("%s: a line without a password: %q", path, line)
		}
		out = append(out, Account{u, strings.TrimSpace(p)})
	}
	return out, nil
}

// ErrText shortens a network error to its cause, so that errors group well in a report.
func ErrText(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	var se syscall.Errno
	if errors.As(err, &se) {
		return se.Error()
	}
	if errors.Is(err, io.EOF) {
		return "EOF"
	}
	return err.Error()
}

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (include/uapi/linux/in.h).
const ipBindAddressNoPort = 24

// NoPort is a net.Dialer Control that sets IP_BIND_ADDRESS_NO_PORT: a socket bound to a
// source address gets its port at connect, per destination, so many source addresses are
// not each limited to 64k ports in all.
func NoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	}); err != nil {
		return err
	}
	return serr
}

// Pace hands out one token every 1/rate seconds from start until done is closed: a load
// generator's workers take one before each step, so the steps of all of them together run
// at rate. Token k is never handed out before start + k/rate; when the workers fall behind,
// the tokens they missed follow at once, so the rate holds on average over the run. nil
// (no pacing) when rate is 0 or less.
func Pace(rate float64, start time.Time, done <-chan struct{}) <-chan struct{} {
	if rate <= 0 {
		return nil
	}
	tokens := make(chan struct{}, 1)
	go func() {
		interval := time.Duration(float64(time.Second) / rate)
		next := start
		for {
			next = next.Add(interval)
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
			select {
			case tokens <- struct{}{}:
			case <-done:
				return
			}
		}
	}()
	return tokens
}
