package engine

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// login_source_ips round robin, and the move to the next address when one cannot be used
// (an address not on this host: binding it fails at once, no packet leaves).
func TestDialerSources(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	target := netip.MustParseAddrPort(ln.Addr().String())
	deadline := time.Now().Add(5 * time.Second)

	d, err := newDialer([]string{"127.0.0.31", "127.0.0.32"})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for i := 0; i < 4; i++ {
		c, err := d.dial(context.Background(), target, netip.Addr{}, deadline)
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, c.LocalAddr().(*net.TCPAddr).IP.String())
		c.Close()
	}
	if strings.Join(seen, " ") != "127.0.0.31 127.0.0.32 127.0.0.31 127.0.0.32" {
		t.Fatalf("round robin: %v", seen)
	}
	// A passdb source_ip wins over the list.
	c, err := d.dial(context.Background(), target, netip.MustParseAddr("127.0.0.33"), deadline)
	if err != nil || c.LocalAddr().(*net.TCPAddr).IP.String() != "127.0.0.33" {
		t.Fatalf("source_ip: %v %v", c, err)
	}
	c.Close()

	const notHere1, notHere2 = "203.0.113.77", "203.0.113.78"
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if strings.HasPrefix(a.String(), notHere1+"/") || strings.HasPrefix(a.String(), notHere2+"/") {
				t.Skipf("%s is an address of this host", a)
			}
		}
	}
	d, _ = newDialer([]string{notHere1, "127.0.0.34"})
	for i := 0; i < 2; i++ {
		c, err := d.dial(context.Background(), target, netip.Addr{}, deadline)
		if err != nil || c.LocalAddr().(*net.TCPAddr).IP.String() != "127.0.0.34" {
			t.Fatalf("an unusable source was not skipped: %v %v", c, err)
		}
		c.Close()
	}
	d, _ = newDialer([]string{notHere1, notHere2})
	if _, err := d.dial(context.Background(), target, netip.Addr{}, deadline); err == nil ||
		!strings.Contains(err.Error(), "every login_source_ips address is out of ports") {
		t.Fatalf("all sources unusable: %v", err)
	}
}

// login_source_ips names: "?name" keeps only this host's addresses of the name; a source
// of the other family than the backend is passed over.
func TestDialerSourceNames(t *testing.T) {
	local := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}
	d, err := newDialerOn([]string{"?127.0.0.41", "?127.0.0.1", "127.0.0.42", "::1"}, local)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(d.sources) != "[127.0.0.1 127.0.0.42 ::1]" {
		t.Fatalf("sources: %v", d.sources)
	}
	v4 := netip.MustParseAddrPort("127.0.0.1:143")
	var picked []string
	for i := 0; i < 4; i++ {
		picked = append(picked, d.pick(netip.Addr{}, v4).String())
	}
	if strings.Join(picked, " ") != "127.0.0.1 127.0.0.42 127.0.0.1 127.0.0.42" {
		t.Fatalf("IPv4 backend got sources %v", picked)
	}
	if got := d.pick(netip.Addr{}, netip.MustParseAddrPort("[::1]:143")); got.String() != "::1" {
		t.Fatalf("IPv6 backend got source %v", got)
	}
	// localhost comes from /etc/hosts: no DNS needed.
	d, err = newDialerOn([]string{"?localhost"}, local)
	if err != nil || !slices.Contains(d.sources, netip.MustParseAddr("127.0.0.1")) {
		t.Fatalf("?localhost: %v %v", d, err)
	}
}
