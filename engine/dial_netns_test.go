package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// In a network namespace whose ip_local_port_range holds 100 ports, the dialer reaches one
// backend address 100 times from one source address and 400 times from four: with
// IP_BIND_ADDRESS_NO_PORT the ports are counted per source address. Past that, a clear error.
func TestSourceIPsPastThePortRange(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "" {
			t.Skip("needs root for a network namespace")
		}
		t.Fatal("needs root for a network namespace")
	}
	name := fmt.Sprintf("doorman-test-%d", os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	ip("netns", "add", name)
	defer exec.Command("ip", "netns", "del", name).Run()
	ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
	ip("netns", "exec", name, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=40000 40099")

	type result struct {
		one, four int
		err       error
		fail      error
	}
	done := make(chan result, 1)
	go func() {
		// This thread enters the namespace and is never given back (it ends with the
		// goroutine), so no other goroutine can run in the namespace by accident.
		runtime.LockOSThread()
		var r result
		defer func() { done <- r }()
		f, err := os.Open("/var/run/netns/" + name)
		if err != nil {
			r.fail = err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			r.fail = err
			return
		}
		var keep []net.Conn
		defer func() {
			for _, c := range keep {
				c.Close()
			}
		}()
		listen := func(addr string) netip.AddrPort {
			// Fixed ports outside the range: the namespace is new, and a listener on port 0
			// would take one of the range's ports.
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				r.fail = err
				return netip.AddrPort{}
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					_ = c // held open until the namespace goes
				}
			}()
			return netip.MustParseAddrPort(ln.Addr().String())
		}
		fill := func(sources []string, target netip.AddrPort) (int, error) {
			d, err := newDialer(sources)
			if err != nil {
				return 0, err
			}
			for n := 0; n < 1000; n++ {
				c, err := d.dial(context.Background(), target, netip.Addr{}, time.Now().Add(5*time.Second))
				if err != nil {
					return n, err
				}
				keep = append(keep, c)
			}
			return 1000, nil
		}
		a, b := listen("127.0.0.1:5001"), listen("127.0.0.1:5002")
		if r.fail != nil {
			return
		}
		var err1 error
		if r.one, err1 = fill([]string{"127.0.0.1"}, a); !errors.Is(err1, syscall.EADDRNOTAVAIL) {
			r.fail = fmt.Errorf("one source ended with %v", err1)
			return
		}
		r.four, r.err = fill([]string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"}, b)
	}()
	r := <-done
	if r.fail != nil {
		t.Fatal(r.fail)
	}
	if r.one < 90 || r.one > 100 {
		t.Fatalf("one source: %d connections, want about the 100 ports of the range", r.one)
	}
	if r.four < 4*r.one-8 || r.four > 4*r.one {
		t.Fatalf("four sources: %d connections, want about 4 × %d", r.four, r.one)
	}
	if r.err == nil || !strings.Contains(r.err.Error(), "every login_source_ips address is out of ports") {
		t.Fatalf("past the range: %v", r.err)
	}
	t.Logf("one source: %d connections; four: %d", r.one, r.four)
}
