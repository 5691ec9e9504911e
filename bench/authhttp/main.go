// Command authhttp is a small auth_http responder for nginx's mail proxy, for the benches:
// it answers nginx's GET with `Auth-Status: OK` and the backend to use (`Auth-Server`,
// `Auth-Port`, chosen by the request's Auth-Protocol), after checking Auth-User and
// Auth-Pass against -users (lines `user:password`); without -users every login is accepted.
// A wrong password gets `Auth-Status: Invalid login or password` and `Auth-Wait: 0`.
//
//	authhttp -addr 127.0.0.1:24380 -users users.txt -imap 127.0.0.1:24143 -pop3 127.0.0.1:24110
//
// It prints `listening ADDR` on stdout once it accepts connections, and a count of
// requests at SIGINT or SIGTERM.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:24380", "address to listen on")
	usersFile := flag.String("users", "", "file of `user:password` lines (empty: accept every login)")
	imap := flag.String("imap", "", "IMAP backend HOST:PORT")
	pop3 := flag.String("pop3", "", "POP3 backend HOST:PORT")
	smtp := flag.String("smtp", "", "SMTP (submission) backend HOST:PORT")
	flag.Parse()

	users := map[string]string{}
	if *usersFile != "" {
		f, err := os.Open(*usersFile)
		if err != nil {
			fail(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || line[0] == '#' {
				continue
			}
			u, p, ok := strings.Cut(line, ":")
			if !ok {
				u, p, ok = strings.Cut(line, " ")
			}
			if ok {
				users[u] = p
			}
		}
		f.Close()
	}
	backends := map[string][2]string{}
	for proto, hp := range map[string]string{"imap": *imap, "pop3": *pop3, "smtp": *smtp} {
		if hp == "" {
			continue
		}
		h, p, err := net.SplitHostPort(hp)
		if err != nil {
			fail(fmt.Errorf("-%s: %v", proto, err))
		}
		backends[proto] = [2]string{h, p}
	}

	var requests, refused atomic.Int64
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		h := w.Header()
		user, pass := r.Header.Get("Auth-User"), r.Header.Get("Auth-Pass")
		// nginx sends the user and password URL-escaped (%XX).
		if v, err := url.PathUnescape(user); err == nil {
			user = v
		}
		if v, err := url.PathUnescape(pass); err == nil {
			pass = v
		}
		be, ok := backends[r.Header.Get("Auth-Protocol")]
		if !ok {
			h.Set("Auth-Status", "Temporary server problem, try again later")
			h.Set("Auth-Wait", "1")
			return
		}
		if len(users) > 0 {
			if want, ok := users[user]; !ok || want != pass {
				refused.Add(1)
				h.Set("Auth-Status", "Invalid login or password")
				h.Set("Auth-Wait", "0")
				return
			}
		}
		h.Set("Auth-Status", "OK")
		h.Set("Auth-Server", be[0])
		h.Set("Auth-Port", be[1])
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fail(err)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Printf("requests %d refused %d\n", requests.Load(), refused.Load())
		os.Exit(0)
	}()
	if err := http.Serve(ln, handler); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "authhttp:", err)
	os.Exit(1)
}
