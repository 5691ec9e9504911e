package route

import (
	"context"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// Vectors made with Dovecot 2.3.19.1 (Debian): doveadm pw -s <SCHEME> -p secret,
// plus -r <rounds> where shown, and the password 'pässwörd with spaces'.
var doveadmVectors = []struct {
	stored, password string
}{
	{"{SHA256-CRYPT}$5$CyWLaS3oYS4X1/sX$mIrCgmXihigo9YJVdbhh5nQfHJ675svY90rSt2akFZ5", "secret"},
	{"{SHA512-CRYPT}$6$mBVar4Tg19MlFPKE$6WFWHtYMIeGd1zmJ/qzD.hr/spEjU.kEmnw0b9uwoURXCJVtz6Gwly9OMeCqw8.m6/GHP83QFvkcat2ysxzLg.", "secret"},
	{"{BLF-CRYPT}$2y$05$KaS4ZF.bqsLurGRgn70fP.Z4EXVi1/aobuaBDU7nZtzLuF7JrDsiK", "secret"},
	{"{MD5-CRYPT}$1$bBtpS6qf$U97Oh0JV8F9xuMrPy0eIK/", "secret"},
	{"{CRYPT}$2y$05$XjXJD9uddIeGw6GyF40pHO5HGvyke/v.SGWu1ZnXHswiM1ZL0Dt0a", "secret"},
	{"{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=", "secret"},
	{"{SSHA256}56I7xTpOGCIxPXdp+IetZuTSuVCPVqjghHnZRT+K3GfL7RrV", "secret"},
	{"{SHA512}vSsar3708Jvp9Szi2NWZZ02Bqp1qRCFpbcTZPdBhnWgs5WtNZKnvCXdhztmeD2cmW192CF5bDufKRpayrW/isg==", "secret"},
	{"{SSHA512}XBj4yJWHzZImrq3lTK8HbMVmHK6wLZfbkWguaij5YLeTc/6oN5aSU9w9eJTPJc37zXygnRtKk3Ze0R/z8ekSxnMCzX4=", "secret"},
	{"{SHA1}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret"},
	{"{SSHA}p3p7+9UPuAQmx28V5IzRaqwCDv9VNlIy", "secret"},
	{"{SMD5}hUmUEqhnz1Ov/j8GxWkwi11loJ4=", "secret"},
	{"{PLAIN-MD5}5ebe2294ecd0e0f08eab7690d2a6ee69", "secret"},
	{"{LDAP-MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==", "secret"},
	{"{PBKDF2}$1$zS9Cw.zVDBJigTzX$5000$d43df4700a68b42c17695da8b20046e3f1588108", "secret"},
	{"{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$45ScSmFOwThxrn8hUUrBDg$KkY8Vc4cDdnRTWs+VHvH/eOoDdG4gFrfAVFPb/5r36E", "secret"},
	{"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$21Mu57Jq/jd9VtCyqZRhWA$eLH50hpHCp3XlqQ9LnJf+kSBMQGs3x4PloAYtq5pZ+s", "secret"},
	{"{MD5}$1$lg/kX3uu$D2VF9ZoiyAGvIF8Y8yHaX.", "secret"},
	{"{PLAIN}secret", "secret"},
	{"{CLEARTEXT}secret", "secret"},
	// doveadm pw -s SHA256.hex / SSHA512.hex: explicit encoding suffix.
	{"{SHA256.HEX}2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b", "secret"},
	{"{SSHA512.HEX}e7fe99e008757c3b02417554239b090085328d0b4d1a9012e37dc222a1f51d390644147ef2c7319f8eae766ff2ddee90da68f134c60c6989a96bdd5e111ec7ee02b4f1ff", "secret"},
	// doveadm pw -s SHA256-CRYPT -r 12345 -p 'pässwörd with spaces'
	{"{SHA256-CRYPT}$5$rounds=12345$kdd5ytiBIMR10YV9$m0vwu0.bnrrf5cvOmJ1hYMq55ZXjRWMF9DNessCOZH7", "pässwörd with spaces"},
	{"{SHA512-CRYPT}$6$ENH//DdxxHM/8ZSJ$ylk.qLt23em6VFDgLwaqcgHbP04OVj2YDrYbsrMGqMtpMnxbYs/lpeXSMiMaY8syg90qu.uBtLY9k2CO4CNzc0", "pässwörd with spaces"},
	{"{BLF-CRYPT}$2y$04$txMgkoKkimKKsfRW4xlpfuOIMLeNKqopx2jtQZytJV8hzxhS3ebmG", "pässwörd with spaces"},
	// doveadm pw -s SHA512-CRYPT -p '' (an empty password is still a hash).
	{"{SHA512-CRYPT}$6$37FYsvs4gwVfFGs2$D82eyjVxboy8/oo.WUe7ay6zlvQppklWf2juRLrVLzhRxyh86bzFTQb70dSJsRXeMISXmjoRy4Ye8ZYZI9Za//", ""},
	// libxcrypt crypt(3) via Python's crypt module.
	{"{CRYPT}$2b$04$abcdefghijklmnopqrstuu2r9OfJnfCsdneAXAGHnS4UpFFP8WIrW", "secret"},
	{"{CRYPT}$2a$04$abcdefghijklmnopqrstuu2r9OfJnfCsdneAXAGHnS4UpFFP8WIrW", "secret"},
	{"{CRYPT}$2y$04$abcdefghijklmnopqrstuubzadhGtS2zEF.gu0yd0opP6cVzb.e0i", strings.Repeat("x", 80)},
	{"{CRYPT}$6$abc$nAebBGPOg3Q3WsQ1a9MKlAcwbWad2MxjIJoJeZPdCfKtDhwpaUiULYJeng03Mh9ddMqD3ZLPqju9mnOU69A9B0", strings.Repeat("x", 80)},
	{"{CRYPT}$1$abc$Or2rbeUYTvt12aiVzMuS/.", ""},
	{"{CRYPT}$1$12345678$yHGf0oZf8H0kWFcG99n58.", strings.Repeat("a", 100)},
	// No {SCHEME}: CRYPT, recognised by prefix.
	{"$6$mBVar4Tg19MlFPKE$6WFWHtYMIeGd1zmJ/qzD.hr/spEjU.kEmnw0b9uwoURXCJVtz6Gwly9OMeCqw8.m6/GHP83QFvkcat2ysxzLg.", "secret"},
	{"$5$CyWLaS3oYS4X1/sX$mIrCgmXihigo9YJVdbhh5nQfHJ675svY90rSt2akFZ5", "secret"},
	{"$2y$05$KaS4ZF.bqsLurGRgn70fP.Z4EXVi1/aobuaBDU7nZtzLuF7JrDsiK", "secret"},
	{"$1$bBtpS6qf$U97Oh0JV8F9xuMrPy0eIK/", "secret"},
	// Scheme names are case-insensitive.
	{"{sha512-crypt}$6$mBVar4Tg19MlFPKE$6WFWHtYMIeGd1zmJ/qzD.hr/spEjU.kEmnw0b9uwoURXCJVtz6Gwly9OMeCqw8.m6/GHP83QFvkcat2ysxzLg.", "secret"},
	{"{plain}secret", "secret"},
	// Guessed hex for a base64 scheme (64 hex digits = 32 bytes).
	{"{SHA256}2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b", "secret"},
	// doveadm pw -s CRAM-MD5 / -s SCRAM-SHA-256 -p secret (Dovecot 2.3).
	{"{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56", "secret"},
	{"{SCRAM-SHA-256}4096,YjMzOlZkNCAVIgpIW7FI0Q==,OymJ0UNcIfX6GHz9pNElOcWP2zhohFU2wteX+v6Urrg=,Ofb8//IbF/Y++wFVE2OsXDyH647o9ZJFynMmeqz+IXo=", "secret"},
}

func TestVerifyDoveadmVectors(t *testing.T) {
	h := NewHasher(0)
	ctx := context.Background()
	for _, v := range doveadmVectors {
		t.Run(v.stored, func(t *testing.T) {
			t.Parallel()
			ok, err := h.Verify(ctx, v.stored, v.password)
			if err != nil || !ok {
				t.Errorf("Verify(%q, %q) = %v, %v; want true", v.stored, v.password, ok, err)
			}
			wrongs := []string{v.password + "x", "Secret", "", "secret\x00"}
			if strings.Contains(v.stored, "$argon2") {
				wrongs = wrongs[:1] // 64 MiB and ~1 s each under -race
			}
			for _, wrong := range wrongs {
				if wrong == v.password || len(v.password) >= 72 && strings.HasPrefix(wrong, v.password) {
					// bcrypt only reads the first 72 bytes.
					continue
				}
				ok, err := h.Verify(ctx, v.stored, wrong)
				if err != nil || ok {
					t.Errorf("Verify(%q, %q) = %v, %v; want false", v.stored, wrong, ok, err)
				}
			}
		})
	}
}

// The test vectors published with the SHA-crypt specification
// (https://www.akkadia.org/drepper/SHA-crypt.txt); the results were
// re-checked against libxcrypt's crypt(3).
func TestSHACryptSpecVectors(t *testing.T) {
	long := "a very much longer text to encrypt.  This one even stretches over more" + "than one line."
	tests := []struct{ setting, password, want string }{
		{"$5$saltstring", "Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"},
		{"$5$rounds=10000$saltstringsaltstring", "Hello world!", "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"},
		{"$5$rounds=5000$toolongsaltstring", "This is just a test", "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5"},
		{"$5$rounds=1400$anotherlongsaltstring", long, "$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1"},
		{"$5$rounds=77777$short", "we have a short salt string but not a short password", "$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/"},
		{"$5$rounds=123456$asaltof16chars..", "a short string", "$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD"},
		{"$5$rounds=10$roundstoolow", "the minimum number is still observed", "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC"},
		{"$6$saltstring", "Hello world!", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
		{"$6$rounds=10000$saltstringsaltstring", "Hello world!", "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."},
		{"$6$rounds=5000$toolongsaltstring", "This is just a test", "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"},
		{"$6$rounds=1400$anotherlongsaltstring", long, "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"},
		{"$6$rounds=77777$short", "we have a short salt string but not a short password", "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0"},
		{"$6$rounds=123456$asaltof16chars..", "a short string", "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1"},
		{"$6$rounds=10$roundstoolow", "the minimum number is still observed", "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."},
	}
	for _, tt := range tests {
		got, ok := shaCrypt(tt.setting, []byte(tt.password))
		if !ok || got != tt.want {
			t.Errorf("shaCrypt(%q) = %q, %v\n want %q", tt.setting, got, ok, tt.want)
		}
		// The full hash is also its own setting, and verifies.
		if ok, err := NewHasher(1).Verify(context.Background(), "{CRYPT}"+tt.want, tt.password); !ok || err != nil {
			t.Errorf("Verify(%q) = %v, %v", tt.want, ok, err)
		}
	}
}

func TestVerifyBcryptGenerated(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost) // $2a$
	if err != nil {
		t.Fatal(err)
	}
	for _, stored := range []string{"{BLF-CRYPT}" + string(hash), string(hash)} {
		if ok, err := NewHasher(1).Verify(context.Background(), stored, "secret"); !ok || err != nil {
			t.Errorf("Verify(%q) = %v, %v", stored, ok, err)
		}
	}
}

func TestVerifyErrors(t *testing.T) {
	tests := []struct {
		stored string
		want   error
	}{
		{"{NOPE}secret", ErrUnknownScheme},
		{"{SHA256.rot13}abc", ErrUnknownScheme},
		{"{DIGEST-MD5}0123456789abcdef0123456789abcdef", ErrUnknownScheme},
		{"{CRYPT}xEEsP7wIhN.K.", ErrUnknownScheme},                                    // traditional DES (doveadm pw -s DES-CRYPT)
		{"{CRYPT}$y$j9T$abc$def", ErrUnknownScheme},                                   // yescrypt
		{"{ARGON2ID}$argon2id$v=16$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA", ErrUnknownScheme}, // old version
		{"{SHA256}!!!not base64!!!", ErrInvalidHash},
		{"{SHA256.hex}zz", ErrInvalidHash},
		{"{SSHA256}c2hvcnQ=", ErrInvalidHash}, // shorter than a digest: no salt
		{"{SHA512-CRYPT}$6$rounds=abc$salt$x", ErrInvalidHash},
		{"{SHA512-CRYPT}$6$rounds=$salt$x", ErrInvalidHash},
		{"{BLF-CRYPT}$2y$99$abcdefghijklmnopqrstuu2r9OfJnfCsdneAXAGHnS4UpFFP8WIrW", ErrInvalidHash},
		{"{BLF-CRYPT}$2y$05$short", ErrInvalidHash},
		{"{PBKDF2}$2$salt$5000$00", ErrInvalidHash},
		{"{PBKDF2}$1$salt$x$d43df4700a68b42c17695da8b20046e3f1588108", ErrInvalidHash},
		{"{PBKDF2}$1$salt$5000$abcd", ErrInvalidHash},
		{"{ARGON2ID}$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g", ErrInvalidHash}, // 4 GiB
		{"{ARGON2ID}garbage", ErrInvalidHash},
		{"{MD5}!!", ErrInvalidHash},
	}
	for _, tt := range tests {
		ok, err := NewHasher(1).Verify(context.Background(), tt.stored, "secret")
		if ok || !errors.Is(err, tt.want) {
			t.Errorf("Verify(%q) = %v, %v; want %v", tt.stored, ok, err, tt.want)
		}
	}
}

func TestVerifyEmptyCryptNeverMatches(t *testing.T) {
	for _, stored := range []string{"{CRYPT}", "{SHA512-CRYPT}", "{BLF-CRYPT}"} {
		ok, err := NewHasher(1).Verify(context.Background(), stored, "")
		if ok || err != nil {
			t.Errorf("Verify(%q, \"\") = %v, %v; want false, nil", stored, ok, err)
		}
	}
}

func TestStoredPassword(t *testing.T) {
	tests := []struct{ in, scheme, want string }{
		{"", "CRYPT", ""},
		{"{PLAIN}x", "CRYPT", "{PLAIN}x"},
		{"secret", "PLAIN", "{PLAIN}secret"},
		{"$6$salt$hash", "CRYPT", "{CRYPT}$6$salt$hash"},
		{"$1$salt$hash", "PLAIN", "{MD5-CRYPT}$1$salt$hash"},
		{"$1$salt$hash$ignored", "PLAIN", "{MD5-CRYPT}$1$salt$hash"},
		{"{no-close", "PLAIN", "{PLAIN}{no-close"},
	}
	for _, tt := range tests {
		if got := storedPassword(tt.in, tt.scheme); got != tt.want {
			t.Errorf("storedPassword(%q, %q) = %q; want %q", tt.in, tt.scheme, got, tt.want)
		}
	}
}

func TestSchemeSupported(t *testing.T) {
	for _, s := range []string{"PLAIN", "crypt", "SHA512-CRYPT", "BLF-CRYPT", "SSHA256.b64", "SHA256.hex", "ARGON2ID", "PBKDF2", "SCRAM-SHA-256", "cram-md5"} {
		if !SchemeSupported(s) {
			t.Errorf("SchemeSupported(%q) = false", s)
		}
	}
	for _, s := range []string{"", "DES-CRYPT", "SHA256.rot13", "SCRAM-SHA-1"} {
		if SchemeSupported(s) {
			t.Errorf("SchemeSupported(%q) = true", s)
		}
	}
}
