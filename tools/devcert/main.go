// Command devcert makes the certificates `make run` serves TLS with: a private test CA
// (DIR/ca.pem) and a certificate for localhost, 127.0.0.1 and any other names given
// (DIR/doorman.pem, DIR/doorman-key.pem), made anew each time (they are valid for a day).
// For development only: clients must be told the CA (curl --cacert DIR/ca.pem).
//
//	devcert [-dir cmd/doorman/example/tls] [name ...]
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"doorman/engine/testenv"
)

func main() {
	dir := flag.String("dir", "cmd/doorman/example/tls", "folder for ca.pem, doorman.pem and doorman-key.pem")
	flag.Parse()
	ca, err := testenv.NewCA(*dir)
	if err != nil {
		fail(err)
	}
	hosts := append([]string{"localhost", "127.0.0.1"}, flag.Args()...)
	if _, _, err := ca.Issue("doorman", hosts...); err != nil {
		fail(err)
	}
	fmt.Fprintf(os.Stderr, "devcert: test CA %s, certificate %s\n", ca.CertFile, filepath.Join(*dir, "doorman.pem"))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "devcert:", err)
	os.Exit(1)
}
