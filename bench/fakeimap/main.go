// Command fakeimap is a fast fake IMAP backend for login-rate benchmarks: every LOGIN
// and AUTHENTICATE PLAIN succeeds, whatever the user and password, and nothing is
// stored. It answers what Doorman sends a backend (ID, CAPABILITY, LOGIN or
// AUTHENTICATE PLAIN with SASL-IR, literals with LITERAL+ or synchronizing) and what a
// short client session sends after it (NOOP, SELECT, LOGOUT). One goroutine per
// connection; small buffers.
//
//	fakeimap -addr 127.0.0.1:21300
//
// With -size N (N > 0) the INBOX (any mailbox) holds one message of N bytes, held in
// memory: `FETCH 1 ...` answers with all of it as one literal, written at memory speed, so a
// bulk relay through a proxy measures the proxy, not the backend. APPEND reads and drops
// its literal; CREATE, STORE, EXPUNGE and CLOSE answer OK; IDLE waits for DONE.
//
// It prints `listening ADDR` on stdout once it accepts connections, and on SIGINT or
// SIGTERM a summary (connections, logins, commands) before it exits.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
)

const greeting = "* OK [CAPABILITY IMAP4rev1 ID LITERAL+ SASL-IR AUTH=PLAIN] fake ready\r\n"

var conns, logins, commands atomic.Int64

// body is the one message (-size), shared by every session.
var body []byte

// tcpNotSentLowat is Linux's TCP_NOTSENT_LOWAT (include/uapi/linux/tcp.h).
const tcpNotSentLowat = 25

func main() {
	addr := flag.String("addr", "127.0.0.1:21300", "address to listen on")
	sndbuf := flag.Int("sndbuf", 0, "SO_SNDBUF of each accepted connection (0: the kernel's autotuning); a small one keeps stalled readers from filling the machine's TCP memory")
	size := flag.Int("size", 0, "bytes of the one message every mailbox holds (0: mailboxes are empty)")
	lowat := flag.Int("notsent-lowat", 0, "TCP_NOTSENT_LOWAT of each accepted connection (0: the system's); bounds what a stalled session queues in this backend's own socket, so that many stalled readers measure the proxy, not the backend")
	flag.Parse()
	if *size > 0 {
		body = make([]byte, *size)
		for i := range body {
			body[i] = 'a' + byte(i%26)
			if i%78 == 76 {
				body[i] = '\r'
			} else if i%78 == 77 {
				body[i] = '\n'
			}
		}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakeimap:", err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Printf("connections %d logins %d commands %d\n", conns.Load(), logins.Load(), commands.Load())
		os.Exit(0)
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			// EMFILE and the like: keep serving.
			continue
		}
		conns.Add(1)
		if tc, ok := c.(*net.TCPConn); ok && *sndbuf > 0 {
			tc.SetWriteBuffer(*sndbuf)
		}
		if tc, ok := c.(*net.TCPConn); ok && *lowat > 0 {
			if rc, err := tc.SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) {
					syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpNotSentLowat, *lowat)
				})
			}
		}
		go serve(c)
	}
}

// serve runs one session until LOGOUT, EOF or an error.
func serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 2048)
	w := bufio.NewWriterSize(c, 2048)
	w.WriteString(greeting)
	if w.Flush() != nil {
		return
	}
	for {
		line, err := readCommand(r, w)
		if err != nil {
			return
		}
		commands.Add(1)
		tag, rest, _ := bytes.Cut(line, []byte(" "))
		verb, args, _ := bytes.Cut(rest, []byte(" "))
		t := string(tag)
		switch string(bytes.ToUpper(verb)) {
		case "ID":
			w.WriteString(`* ID ("name" "fakeimap")` + "\r\n" + t + " OK ID completed.\r\n")
		case "CAPABILITY":
			w.WriteString("* CAPABILITY IMAP4rev1 ID LITERAL+ SASL-IR AUTH=PLAIN\r\n" + t + " OK Capability completed.\r\n")
		case "LOGIN":
			logins.Add(1)
			w.WriteString(t + " OK [CAPABILITY IMAP4rev1 ID LITERAL+ IDLE] Logged in\r\n")
		case "AUTHENTICATE":
			if _, ir, ok := bytes.Cut(args, []byte(" ")); !ok || len(ir) == 0 {
				// No SASL-IR: ask for the response and read it.
				w.WriteString("+ \r\n")
				if w.Flush() != nil {
					return
				}
				if _, err := readLine(r); err != nil {
					return
				}
			}
			logins.Add(1)
			w.WriteString(t + " OK [CAPABILITY IMAP4rev1 ID LITERAL+ IDLE] Logged in\r\n")
		case "NOOP":
			w.WriteString(t + " OK NOOP completed.\r\n")
		case "SELECT", "EXAMINE":
			w.WriteString("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n" +
				"* " + strconv.Itoa(min(len(body), 1)) + " EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1] UIDs valid\r\n* OK [UIDNEXT 1] Predicted next UID\r\n" +
				t + " OK [READ-WRITE] Select completed.\r\n")
		case "CREATE", "STORE", "EXPUNGE", "CLOSE", "APPEND":
			w.WriteString(t + " OK " + string(verb) + " completed.\r\n")
		case "FETCH", "UID":
			if len(body) == 0 {
				w.WriteString(t + " OK Fetch completed.\r\n")
				break
			}
			w.WriteString("* 1 FETCH (BODY[] {" + strconv.Itoa(len(body)) + "}\r\n")
			if w.Flush() != nil {
				return
			}
			if _, err := c.Write(body); err != nil {
				return
			}
			w.WriteString(")\r\n" + t + " OK Fetch completed.\r\n")
		case "IDLE":
			w.WriteString("+ idling\r\n")
			if w.Flush() != nil {
				return
			}
			if _, err := readLine(r); err != nil { // DONE
				return
			}
			w.WriteString(t + " OK Idle completed.\r\n")
		case "LOGOUT":
			w.WriteString("* BYE Logging out\r\n" + t + " OK Logout completed.\r\n")
			w.Flush()
			return
		default:
			w.WriteString(t + " BAD Unknown command.\r\n")
		}
		// Flush only when no more pipelined input is waiting.
		if r.Buffered() == 0 {
			if w.Flush() != nil {
				return
			}
		}
	}
}

// readCommand reads one command line, literals included (their contents are kept in
// place of the {n} marker, which is good enough for this server). A synchronizing
// literal gets its `+` first.
func readCommand(r *bufio.Reader, w *bufio.Writer) ([]byte, error) {
	var out []byte
	for {
		line, err := readLine(r)
		if err != nil {
			return nil, err
		}
		n, sync, ok := literal(line)
		if !ok {
			return append(out, line...), nil
		}
		out = append(out, line[:bytes.LastIndexByte(line, '{')]...)
		if sync {
			w.WriteString("+ OK\r\n")
			if err := w.Flush(); err != nil {
				return nil, err
			}
		}
		if n > 64<<10 {
			// A message (APPEND): read and drop it.
			if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
				return nil, err
			}
			continue
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		out = append(out, buf...)
	}
}

// readLine reads a line without its CRLF.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		// A long line: gather it.
		buf := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull {
			line, err = r.ReadSlice('\n')
			buf = append(buf, line...)
		}
		line = buf
	}
	if err != nil {
		return nil, err
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return append([]byte(nil), line...), nil
}

// literal reports whether line ends in {n} or {n+}.
func literal(line []byte) (n int, sync, ok bool) {
	if len(line) < 3 || line[len(line)-1] != '}' {
		return 0, false, false
	}
	i := bytes.LastIndexByte(line, '{')
	if i < 0 {
		return 0, false, false
	}
	num := line[i+1 : len(line)-1]
	sync = true
	if len(num) > 0 && (num[len(num)-1] == '+' || num[len(num)-1] == '-') {
		num, sync = num[:len(num)-1], false
	}
	v, err := strconv.Atoi(string(num))
	if err != nil || v < 0 || v > 1<<30 {
		return 0, false, false
	}
	return v, sync, true
}
