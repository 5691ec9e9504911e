package route

import (
	"errors"
	"testing"
)

func TestSASLSecret(t *testing.T) {
	const scram = "{SCRAM-SHA-256}4096,YjMzOlZkNCAVIgpIW7FI0Q==,OymJ0UNcIfX6GHz9pNElOcWP2zhohFU2wteX+v6Urrg=,Ofb8//IbF/Y++wFVE2OsXDyH647o9ZJFynMmeqz+IXo="
	const cram = "{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56"
	for _, c := range []struct {
		stored, mech, want string
		err                error
	}{
		{"{PLAIN}secret", "CRAM-MD5", "{PLAIN}secret", nil},
		{"{plain.b64}c2VjcmV0", "SCRAM-SHA-256", "{PLAIN}secret", nil},
		{"{CLEARTEXT}secret", "SCRAM-SHA-256", "{PLAIN}secret", nil},
		{cram, "CRAM-MD5", cram, nil},
		{scram, "SCRAM-SHA-256", scram, nil},
		{cram, "SCRAM-SHA-256", "", ErrSchemeNotUsable},
		{scram, "CRAM-MD5", "", ErrSchemeNotUsable},
		{"{SHA512-CRYPT}$6$x$y", "CRAM-MD5", "", ErrSchemeNotUsable},
		{"", "SCRAM-SHA-256", "", ErrSchemeNotUsable},
		{"{NOSUCH}x", "CRAM-MD5", "", ErrSchemeNotUsable},
		{"{CRAM-MD5}abcd", "CRAM-MD5", "", ErrInvalidHash},
		{"{SCRAM-SHA-256}4096,x", "SCRAM-SHA-256", "", ErrInvalidHash},
	} {
		got, err := SASLSecret(c.stored, c.mech)
		if got != c.want || !errors.Is(err, c.err) {
			t.Errorf("SASLSecret(%q, %s) = %q, %v; want %q, %v", c.stored, c.mech, got, err, c.want, c.err)
		}
	}
}
