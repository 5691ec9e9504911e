package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependenciesPointOneWay keeps the layout honest, on each package's direct imports
// (which, applied to every package of the module, also covers the indirect ones): codecs
// are pure (no network, files, clock or third-party code), route knows neither codec nor
// engine, and nothing imports bench or tools.
func TestDependenciesPointOneWay(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}|{{join .Imports " "}}`, "doorman/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	rules := []struct {
		pkg       string
		forbidden []string
	}{
		{"doorman/codec/", []string{"doorman/engine", "doorman/route", "net", "os", "time", "syscall", "go.uber.org/", "github.com/", "golang.org/"}},
		{"doorman/route/", []string{"doorman/codec", "doorman/engine"}},
		{"doorman/", []string{"doorman/bench", "doorman/tools"}},
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, "|")
		for _, r := range rules {
			if !strings.HasPrefix(pkg+"/", r.pkg) || strings.HasPrefix(pkg, "doorman/bench") || strings.HasPrefix(pkg, "doorman/tools") {
				continue
			}
			checked++
			for _, imp := range strings.Fields(imports) {
				for _, f := range r.forbidden {
					if imp == f || strings.HasPrefix(imp, strings.TrimSuffix(f, "/")+"/") {
						t.Errorf("%s imports %s", pkg, imp)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no package was checked")
	}
}
