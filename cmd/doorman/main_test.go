package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"doorman/engine/testenv"
)

// exampleCopy copies the example configuration to a temporary folder, with the test
// certificates `make run` makes (tools/devcert) in its tls/ folder.
func exampleCopy(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"doorman.yaml", "users.passwd"} {
		b, err := os.ReadFile(filepath.Join("example", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ca, err := testenv.NewCA(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.Issue("doorman", "localhost", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "doorman.yaml")
}

func TestCheckExampleConfig(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-t", "-c", exampleCopy(t)}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "is valid") {
		t.Fatalf("output: %q", out.String())
	}
}

func TestCheckReportsEveryError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	yml := "listeners:\n  - {name: imap, protocol: imap4, address: \"127.0.0.1\"}\npassdb:\n  - {driver: passwd-file, path: missing.passwd}\n"
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"-t", "-c", path}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{"listeners[0].protocol", "listeners[0].address", "passdb[0].path"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("%q missing from: %s", want, errOut.String())
		}
	}
}
