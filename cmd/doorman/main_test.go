package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckExampleConfig(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-t", "-c", "example/doorman.yaml"}, &out, &errOut); code != 0 {
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
