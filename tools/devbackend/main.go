// Command devbackend runs a private Dovecot backend on loopback for
// development (`make run`): IMAP, and with -protocols also POP3, submission,
// LMTP and ManageSieve. It stays in the foreground until SIGINT or SIGTERM
// and then stops Dovecot.
//
//	devbackend [-dir ./run/backend] [-listen 127.0.0.1] [-standard-ports] [-port 10143]
//	           [-users FILE] [-master proxy:masterpw] [-protocols imap,pop3,submission,lmtp,sieve]
//	           [-pop3-port 10110] [-submission-port 10587] [-lmtp-port 10024] [-sieve-port 14190]
//
// All protocols listen on the loopback address -listen. With
// -standard-ports the ports not given explicitly are the protocols'
// standard ones (IMAP 143, POP3 110, submission 587, LMTP 24, ManageSieve
// 4190) instead of 10143, 10110, 10587, 10024 and 14190; that is meant for
// an address of its own, e.g. -listen 127.0.0.2 -standard-ports.
//
// The users file holds "user:password" lines (blank lines and lines
// starting with '#' are ignored); without -users the backend has the users
// alice/secret and bob/secret.
//
// Stdout gets the IMAP address on the first line (as before), then one
// "PROTOCOL ADDRESS" line per other protocol. Submission relays to an
// in-process SMTP sink; each message it receives is saved as
// DIR/sink/NNNN.eml and reported on stderr. LMTP delivers RCPT
// TO:<user@any.domain> to the user's maildir (the local part is the user).
//
// Needs root and the Debian packages dovecot-core and dovecot-imapd; for
// the other protocols dovecot-pop3d, dovecot-submissiond, dovecot-lmtpd,
// dovecot-managesieved and dovecot-sieve.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"doorman/engine/testenv"
)

func main() {
	dir := flag.String("dir", "./run/backend", "run folder of the backend (config, log, mail)")
	listen := flag.String("listen", "127.0.0.1", "loopback address dovecot listens on (all protocols), e.g. 127.0.0.2")
	standardPorts := flag.Bool("standard-ports", false, "default to the standard ports 143, 110, 587, 24 and 4190 (for a -listen address of its own)")
	port := flag.Int("port", 10143, "IMAP port on the -listen address (0: pick a free one; 143 with -standard-ports)")
	usersFile := flag.String("users", "", "file of user:password lines (default: alice/secret and bob/secret)")
	master := flag.String("master", "", "master user as name:password, e.g. proxy:masterpw (LOGIN user*name, SASL PLAIN authzid=user authcid=name)")
	trusted := flag.String("trusted", "127.0.0.0/8", "login_trusted_networks (ID x-originating-ip and XCLIENT are accepted from there)")
	protocols := flag.String("protocols", "imap", "comma-separated protocols to serve: imap,pop3,submission,lmtp,sieve (IMAP is always served)")
	pop3Port := flag.Int("pop3-port", 10110, "POP3 port on the -listen address (0: pick a free one; 110 with -standard-ports)")
	submissionPort := flag.Int("submission-port", 10587, "submission port on the -listen address (0: pick a free one; 587 with -standard-ports)")
	lmtpPort := flag.Int("lmtp-port", 10024, "LMTP port on the -listen address (0: pick a free one; 24 with -standard-ports)")
	sievePort := flag.Int("sieve-port", 14190, "ManageSieve port on the -listen address (0: pick a free one; 4190 with -standard-ports)")
	flag.Parse()
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected arguments %q", flag.Args()))
	}
	if *standardPorts {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, sp := range []struct {
			flag string
			port *int
			std  int
		}{
			{"port", port, 143}, {"pop3-port", pop3Port, 110}, {"submission-port", submissionPort, 587},
			{"lmtp-port", lmtpPort, 24}, {"sieve-port", sievePort, 4190},
		} {
			if !set[sp.flag] {
				*sp.port = sp.std
			}
		}
	}

	opts := testenv.DovecotOptions{Dir: *dir, ListenIP: *listen, IMAPPort: *port, TrustedNetworks: *trusted,
		POP3Port: *pop3Port, SubmissionPort: *submissionPort, LMTPPort: *lmtpPort, SievePort: *sievePort}
	for _, p := range strings.Split(*protocols, ",") {
		if p = strings.TrimSpace(p); p != "" {
			opts.Protocols = append(opts.Protocols, p)
		}
	}
	if err := testenv.AvailableProtocols(opts.Protocols...); err != nil {
		fail(err)
	}
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
	// stdout: the IMAP address, then "PROTOCOL ADDRESS" lines (for
	// scripts); details on stderr
	fmt.Println(d.IMAPAddr)
	fmt.Fprintf(os.Stderr, "devbackend: dovecot IMAP on %s (users %s", d.IMAPAddr, strings.Join(names, ", "))
	if opts.MasterUser != "" {
		fmt.Fprintf(os.Stderr, "; master user %s", opts.MasterUser)
	}
	fmt.Fprintln(os.Stderr, ")")
	for _, p := range []struct{ proto, name, addr, note string }{
		{"pop3", "POP3", d.POP3Addr, ""},
		{"submission", "submission", d.SubmissionAddr, ""},
		{"lmtp", "LMTP", d.LMTPAddr, " (RCPT TO:<user@any.domain> delivers to user)"},
		{"sieve", "ManageSieve", d.SieveAddr, ""},
	} {
		if p.addr == "" {
			continue
		}
		fmt.Printf("%s %s\n", p.proto, p.addr)
		if p.proto == "submission" {
			p.note = fmt.Sprintf(" (relays to the SMTP sink on %s, messages saved in %s)", d.Sink.Addr, filepath.Join(d.Dir, "sink"))
		}
		fmt.Fprintf(os.Stderr, "devbackend: dovecot %s on %s%s\n", p.name, p.addr, p.note)
	}
	fmt.Fprintf(os.Stderr, "devbackend: run folder %s, log %s; Ctrl-C stops\n", d.Dir, d.LogPath)

	var tick <-chan time.Time
	if d.Sink != nil {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
	saved := 0
	code := 0
loop:
	for {
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "devbackend: %v, stopping dovecot\n", s)
			break loop
		case <-d.Done():
			fmt.Fprintf(os.Stderr, "devbackend: dovecot exited unexpectedly; see %s\n", d.LogPath)
			code = 1
			break loop
		case <-tick:
			saved = saveSinkMessages(d, saved)
		}
	}
	if err := d.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "devbackend: stop: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

// saveSinkMessages writes the sink's messages from number saved on into
// DIR/sink/NNNN.eml (numbered on after the files of earlier runs) and
// reports them; it returns the new count.
func saveSinkMessages(d *testenv.Dovecot, saved int) int {
	msgs := d.Sink.Messages()
	if len(msgs) <= saved {
		return saved
	}
	dir := filepath.Join(d.Dir, "sink")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "devbackend: sink: %v\n", err)
		return len(msgs)
	}
	for i := saved; i < len(msgs); i++ {
		m := msgs[i]
		var p string
		for n := i + 1; ; n++ {
			if p = filepath.Join(dir, fmt.Sprintf("%04d.eml", n)); !exists(p) {
				break
			}
		}
		if err := os.WriteFile(p, m.Data, 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "devbackend: sink: %v\n", err)
			continue
		}
		fmt.Fprintf(os.Stderr, "devbackend: sink: message from <%s> to <%s> (%d bytes) saved as %s\n",
			m.From, strings.Join(m.To, ">, <"), len(m.Data), p)
	}
	return len(msgs)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
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
