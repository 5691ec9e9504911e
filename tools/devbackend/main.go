// Command devbackend runs a private Dovecot IMAP backend on loopback for
// development (`make run`). It stays in the foreground until SIGINT or
// SIGTERM and then stops Dovecot.
//
//	devbackend [-dir ./run/backend] [-port 10143] [-users FILE] [-master proxy:masterpw]
//
// The users file holds "user:password" lines (blank lines and lines
// starting with '#' are ignored); without -users the backend has the users
// alice/secret and bob/secret. Needs root and the Debian packages
// dovecot-core and dovecot-imapd.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"doorman/engine/testenv"
)

func main() {
	dir := flag.String("dir", "./run/backend", "run folder of the backend (config, log, mail)")
	port := flag.Int("port", 10143, "IMAP port on 127.0.0.1 (0: pick a free one)")
	usersFile := flag.String("users", "", "file of user:password lines (default: alice/secret and bob/secret)")
	master := flag.String("master", "", "master user as name:password, e.g. proxy:masterpw (LOGIN user*name, SASL PLAIN authzid=user authcid=name)")
	trusted := flag.String("trusted", "127.0.0.0/8", "login_trusted_networks (ID x-originating-ip is accepted from there)")
	flag.Parse()
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected arguments %q", flag.Args()))
	}

	if err := testenv.Available(); err != nil {
		fail(err)
	}
	opts := testenv.DovecotOptions{Dir: *dir, IMAPPort: *port, TrustedNetworks: *trusted}
	if *usersFile != "" {
		users, err := readUsers(*usersFile)
		if err != nil {
			fail(err)
		}
		opts.Users = users
	} else {
		opts.Users = []testenv.User{{Name: "alice", Password: "secret"}, {Name: "bob", Password: "secret"}}
	}
	if *master != "" {
		name, pass, ok := strings.Cut(*master, ":")
		if !ok || name == "" {
			fail(fmt.Errorf("-master wants name:password, got %q", *master))
		}
		opts.MasterUser, opts.MasterPass = name, pass
	}

	// Catch signals before starting, so an early Ctrl-C still stops Dovecot.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)

	d, err := testenv.StartDovecot(opts)
	if err != nil {
		fail(err)
	}
	names := make([]string, len(opts.Users))
	for i, u := range opts.Users {
		names[i] = u.Name
	}
	// stdout: just the address (for scripts); details on stderr
	fmt.Println(d.IMAPAddr)
	fmt.Fprintf(os.Stderr, "devbackend: dovecot IMAP on %s (users %s", d.IMAPAddr, strings.Join(names, ", "))
	if opts.MasterUser != "" {
		fmt.Fprintf(os.Stderr, "; master user %s", opts.MasterUser)
	}
	fmt.Fprintf(os.Stderr, ")\ndevbackend: run folder %s, log %s; Ctrl-C stops\n", d.Dir, d.LogPath)

	code := 0
	select {
	case s := <-sigs:
		fmt.Fprintf(os.Stderr, "devbackend: %v, stopping dovecot\n", s)
	case <-d.Done():
		fmt.Fprintf(os.Stderr, "devbackend: dovecot exited unexpectedly; see %s\n", d.LogPath)
		code = 1
	}
	if err := d.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "devbackend: stop: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

// readUsers parses "user:password" lines.
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
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, errors.New(path + ": no users")
	}
	return users, nil
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "devbackend: %v\n", err)
	os.Exit(1)
}
