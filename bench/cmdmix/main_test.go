package main

import (
	"bufio"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestLiteralSize(t *testing.T) {
	for _, tc := range []struct {
		line string
		n    int
		ok   bool
	}{
		{"* 1 FETCH (BODY[HEADER] {42}\r\n", 42, true},
		{"* 1 FETCH (BODY[HEADER] {7+}\r\n", 7, true},
		{"* 1 FETCH (FLAGS (\\Seen))\r\n", 0, false},
		{"* OK {x}\r\n", 0, false},
		{"}\r\n", 0, false},
	} {
		n, ok := literalSize([]byte(tc.line))
		if n != tc.n || ok != tc.ok {
			t.Errorf("literalSize(%q) = %d, %v; want %d, %v", tc.line, n, ok, tc.n, tc.ok)
		}
	}
}

// A reply with a literal that holds a line that looks like the tagged reply: the literal
// is skipped whole, and the command ends at the real tagged OK.
func TestCommandReadsLiterals(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	c := &client{conn: a, r: bufio.NewReader(a)}
	go func() {
		r := bufio.NewReader(b)
		line, _ := r.ReadString('\n')
		tag, _, _ := strings.Cut(line, " ")
		body := tag + " OK not the end\r\n"
		b.Write([]byte("* 1 FETCH (BODY[HEADER] {" + strconv.Itoa(len(body)) + "}\r\n" + body + ")\r\n"))
		b.Write([]byte(tag + " NO [TRYCAGAIN] later\r\n"))
		line, _ = r.ReadString('\n')
		tag, _, _ = strings.Cut(line, " ")
		b.Write([]byte(tag + " OK done\r\n"))
	}()
	if err := c.command("FETCH 1 (BODY.PEEK[HEADER])", time.Second); err == nil || !strings.Contains(err.Error(), "TRYCAGAIN") {
		t.Fatalf("command = %v; want the tagged NO after the literal", err)
	}
	if err := c.command("NOOP", time.Second); err != nil {
		t.Fatalf("NOOP: %v", err)
	}
}
