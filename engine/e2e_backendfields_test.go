package engine

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// The backend-login fields that shape the dialogue with a real Dovecot: proxy_nopipelining,
// and the CAPABILITY a client asked for before logging in.

// tap is a TCP relay between Doorman and the backend that records, in order, each chunk
// either side sent. Only the recording is fake: both ends are the real parts.
type tap struct {
	ln     net.Listener
	mu     sync.Mutex
	events []tapEvent
}

type tapEvent struct {
	fromProxy bool
	data      string
}

func startTap(t *testing.T, backend string) *tap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp := &tap{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			go tp.pump(c, b, true)
			go tp.pump(b, c, false)
		}
	}()
	return tp
}

func (tp *tap) pump(src, dst net.Conn, fromProxy bool) {
	defer dst.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			// Record before forwarding: the other side cannot answer what it has not got.
			tp.mu.Lock()
			tp.events = append(tp.events, tapEvent{fromProxy, string(buf[:n])})
			tp.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or reset: closing dst passes it on
		}
	}
}

// index returns the position of the first event from the given side containing s, or -1.
func (tp *tap) index(fromProxy bool, s string) int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for i, e := range tp.events {
		if e.fromProxy == fromProxy && strings.Contains(e.data, s) {
			return i
		}
	}
	return -1
}

func TestProxyNoPipelining(t *testing.T) {
	be := sharedBackend(t)
	for _, tc := range []struct {
		name       string
		fields     string
		pipelining bool
	}{
		{"pipelined", "", true},
		{"nopipelining", " proxy_nopipelining", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := startTap(t, be.IMAPAddr)
			p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(tp.ln.Addr().String())+tc.fields), "")
			c := dial(t, p.addr, "")
			c.send("a LOGIN alice secret\r\n")
			expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
			id, idOK, login := tp.index(true, "I ID ("), tp.index(false, "I OK"), tp.index(true, "L LOGIN")
			if id < 0 || idOK < 0 || login < 0 {
				t.Fatalf("tap saw ID at %d, its OK at %d, LOGIN at %d", id, idOK, login)
			}
			if tc.pipelining && login > idOK {
				t.Fatalf("LOGIN (event %d) waited for the ID reply (event %d) without proxy_nopipelining", login, idOK)
			}
			if !tc.pipelining && login < idOK {
				t.Fatalf("with proxy_nopipelining LOGIN (event %d) went before the ID reply (event %d)", login, idOK)
			}
		})
	}
}

// A client that asked CAPABILITY before LOGIN gets the backend's post-login capabilities as
// an untagged line before its tagged OK (Dovecot's proxy does the same); one that did not
// gets them in the OK's resp-code.
func TestCapabilityAfterLogin(t *testing.T) {
	be := sharedBackend(t)
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)), "")

	c := dial(t, p.addr, "")
	c.send("a CAPABILITY\r\n")
	pre := c.until("a", 5*time.Second)
	if strings.Contains(pre[0], " MOVE") {
		t.Fatalf("pre-login capabilities already have post-login ones: %q", pre[0])
	}
	c.send("b LOGIN alice secret\r\n")
	lines := c.until("b", 10*time.Second)
	if len(lines) < 2 || !strings.HasPrefix(lines[len(lines)-2], "* CAPABILITY IMAP4rev1") || !strings.Contains(lines[len(lines)-2], " MOVE") {
		t.Fatalf("want the backend's * CAPABILITY before the tagged OK, got %q", lines)
	}
	expectPrefix(t, last(lines), "b OK")

	c2 := dial(t, p.addr, "")
	c2.send("a LOGIN alice secret\r\n")
	lines = c2.until("a", 10*time.Second)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "a OK [CAPABILITY IMAP4rev1") || !bytes.Contains([]byte(lines[0]), []byte(" MOVE")) {
		t.Fatalf("want the post-login capabilities in the OK's resp-code, got %q", lines)
	}
}
