package testenv

import (
	"os"
	"testing"
)

// RequireDovecot skips the test if Dovecot cannot be started here, unless
// the environment variable CI is set: then the test fails.
func RequireDovecot(tb testing.TB) {
	tb.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("dovecot backend required in CI: %v", err)
		}
		tb.Skipf("skipping: %v", err)
	}
}

// RequireDovecotProtocols is RequireDovecot for an instance that also
// serves the given protocols ("pop3", "submission", "lmtp", "sieve").
func RequireDovecotProtocols(tb testing.TB, protocols ...string) {
	tb.Helper()
	if _, err := normProtocols(protocols); err != nil {
		tb.Fatal(err) // a typo must not skip the test
	}
	if err := AvailableProtocols(protocols...); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("dovecot backend required in CI: %v", err)
		}
		tb.Skipf("skipping: %v", err)
	}
}

// MustStartDovecot calls RequireDovecotProtocols(tb, opts.Protocols...),
// starts an instance (in a new temporary Dir unless opts.Dir is set) and
// stops it when the test ends.
func MustStartDovecot(tb testing.TB, opts DovecotOptions) *Dovecot {
	tb.Helper()
	RequireDovecotProtocols(tb, opts.Protocols...)
	d, err := StartDovecot(opts)
	if err != nil {
		tb.Fatalf("starting dovecot: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			if log, err := d.Log(); err == nil {
				tb.Logf("dovecot log (%s):\n%s", d.LogPath, tail(log, 40))
			}
		}
		if err := d.Stop(); err != nil {
			tb.Errorf("stopping dovecot: %v", err)
		}
	})
	return d
}
