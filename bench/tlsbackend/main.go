// Command tlsbackend runs a private Dovecot IMAP backend with TLS for the benches: what
// bin/devbackend runs (engine/testenv, the same capacity settings), plus ssl = yes with the
// given certificate and an implicit-TLS (imaps) port, so Doorman's passdb ssl=yes has a
// backend to talk TLS to. The plain IMAP port stays as it is (STARTTLS offered, plain-text
// logins allowed).
//
//	tlsbackend -dir DIR -port 21143 -users FILE -cert doorman.pem -key doorman-key.pem
//
// stdout: "imap ADDR" and "imaps ADDR" once Dovecot greets on both; SIGINT or SIGTERM stops
// Dovecot.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"doorman/engine/testenv"
)

func main() {
	dir := flag.String("dir", "", "run folder (config, log, mail); required")
	port := flag.Int("port", 0, "plain IMAP port on 127.0.0.1 (0: a free one); imaps gets a free port")
	usersFile := flag.String("users", "", "file of user:password lines; required")
	cert := flag.String("cert", "", "PEM certificate for 127.0.0.1 (e.g. bin/devcert's doorman.pem); required")
	key := flag.String("key", "", "its PEM key; required")
	flag.Parse()
	if *dir == "" || *usersFile == "" || *cert == "" || *key == "" {
		fail(fmt.Errorf("-dir, -users, -cert and -key are required"))
	}
	users, err := readUsers(*usersFile)
	if err != nil {
		fail(err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	d, err := testenv.StartDovecot(testenv.DovecotOptions{
		Dir: *dir, IMAPPort: *port, Users: users,
		SSL: "yes", SSLCert: *cert, SSLKey: *key, TLSPorts: true,
	})
	if err != nil {
		fail(err)
	}
	fmt.Printf("imap %s\nimaps %s\n", d.IMAPAddr, d.IMAPSAddr)
	fmt.Fprintf(os.Stderr, "tlsbackend: dovecot IMAP on %s, IMAPS on %s (%d users); log %s\n", d.IMAPAddr, d.IMAPSAddr, len(users), d.LogPath)
	code := 0
	select {
	case s := <-sigs:
		fmt.Fprintf(os.Stderr, "tlsbackend: %v, stopping dovecot\n", s)
	case <-d.Done():
		fmt.Fprintf(os.Stderr, "tlsbackend: dovecot exited unexpectedly; see %s\n", d.LogPath)
		code = 1
	}
	if err := d.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "tlsbackend: stop: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

func readUsers(path string) ([]testenv.User, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var users []testenv.User
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, pass, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("%s:%d: want user:password", path, n)
		}
		users = append(users, testenv.User{Name: name, Password: pass})
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("%s: no users", path)
	}
	return users, sc.Err()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tlsbackend:", err)
	os.Exit(1)
}
