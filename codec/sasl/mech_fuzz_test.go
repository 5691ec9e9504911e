package sasl

import (
	"bytes"
	"encoding/base64"
	"testing"
)

// FuzzXOAuth2 parses arbitrary XOAUTH2 messages: a result must be a non-empty user
// without NUL and a token of RFC 6750's b64token, both found in the message, and what
// AppendXOAuth2 makes of them must parse back to them.
func FuzzXOAuth2(f *testing.F) {
	for _, c := range xoauth2Cases {
		f.Add([]byte(c.msg))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		user, token, err := ParseXOAuth2(msg)
		if err != nil {
			if err != ErrOAuth {
				t.Fatalf("error %v", err)
			}
			return
		}
		checkOAuth(t, msg, user, token)
		if bytes.IndexByte(user, 1) >= 0 {
			return // a user with ^A can't be sent back
		}
		enc := AppendXOAuth2(nil, string(user), string(token))
		dec, _ := base64.StdEncoding.DecodeString(string(enc))
		u2, t2, err := ParseXOAuth2(dec)
		if err != nil || !bytes.Equal(u2, user) || !bytes.Equal(t2, token) {
			t.Fatalf("round trip of %q %q: %q %q %v", user, token, u2, t2, err)
		}
	})
}

// FuzzOAuthBearer is FuzzXOAuth2 for OAUTHBEARER, whose user is decoded.
func FuzzOAuthBearer(f *testing.F) {
	for _, c := range oauthBearerCases {
		f.Add([]byte(c.msg))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		user, token, err := ParseOAuthBearer(msg, nil)
		if err != nil {
			if err != ErrOAuth {
				t.Fatalf("error %v", err)
			}
			return
		}
		checkOAuth(t, msg, nil, token)
		if len(user) == 0 || bytes.IndexByte(user, 0) >= 0 {
			t.Fatalf("user %q", user)
		}
		if bytes.IndexByte(user, 1) >= 0 {
			return
		}
		enc := AppendOAuthBearer(nil, string(user), string(token))
		dec, _ := base64.StdEncoding.DecodeString(string(enc))
		u2, t2, err := ParseOAuthBearer(dec, nil)
		if err != nil || !bytes.Equal(u2, user) || !bytes.Equal(t2, token) {
			t.Fatalf("round trip of %q %q: %q %q %v", user, token, u2, t2, err)
		}
	})
}

func checkOAuth(t *testing.T, msg, user, token []byte) {
	t.Helper()
	if user != nil && (len(user) == 0 || bytes.IndexByte(user, 0) >= 0 || !bytes.Contains(msg, user)) {
		t.Fatalf("user %q", user)
	}
	if _, ok := bearer(append([]byte("Bearer "), token...)); !ok || !bytes.Contains(msg, token) {
		t.Fatalf("token %q", token)
	}
}

// FuzzCRAMMD5 parses arbitrary CRAM-MD5 responses: a result is the message cut at its
// last space, and verifying it must not panic.
func FuzzCRAMMD5(f *testing.F) {
	f.Add([]byte(cramResponse))
	f.Add([]byte("a b b913a602c7eda7a495b4e6e7334d3890"))
	f.Add([]byte("tim b913a602"))
	f.Fuzz(func(t *testing.T, resp []byte) {
		user, digest, err := ParseCRAMMD5(resp)
		if err != nil {
			if err != ErrCRAM {
				t.Fatalf("error %v", err)
			}
			return
		}
		if len(user) == 0 || len(digest) != 32 || len(user)+1+len(digest) != len(resp) || bytes.IndexByte(digest, ' ') >= 0 {
			t.Fatalf("%q %q", user, digest)
		}
		if VerifyCRAMMD5(cramChallenge, string(digest), user) && string(resp) != cramResponse {
			t.Logf("verified %q", resp)
		}
		VerifyCRAMMD5Secret(cramChallenge, string(digest), digest)
	})
}

// FuzzSCRAMClientFirst parses arbitrary client-first messages and runs the exchange on
// with the RFC 7677 secret: nothing may panic, a result must have a non-empty user and
// nonce, and the server's first message must start with the client's nonce.
func FuzzSCRAMClientFirst(f *testing.F) {
	for _, s := range []string{scramClientFirst, "y,a=adm=2Cin,n=us=3Der,r=abc,ext=1", "p=x,,n=u,r=x", "n,,n=u=2Xr,r=x"} {
		f.Add([]byte(s))
	}
	secret := rfc7677Secret(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		var s SCRAMServer
		user, _, err := s.ClientFirst(msg)
		if err != nil {
			if err != ErrSCRAM {
				t.Fatalf("error %v", err)
			}
			return
		}
		if len(user) == 0 || bytes.IndexByte(user, 0) >= 0 {
			t.Fatalf("user %q", user)
		}
		sf, err := s.ServerFirst(secret, "snonce")
		if err != nil {
			t.Fatal(err)
		}
		cf, _, _ := ParseSCRAMClientFirst(msg, nil)
		if !bytes.HasPrefix(sf, append([]byte("r="), cf.Nonce...)) {
			t.Fatalf("server-first %q for %q", sf, msg)
		}
	})
}

// FuzzSCRAMClientFinal runs the RFC 7677 exchange with an arbitrary client-final
// message: only the RFC's own may succeed.
func FuzzSCRAMClientFinal(f *testing.F) {
	for _, s := range []string{scramClientFinal, "c=biws,r=x,p=AA==", "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,e=1,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="} {
		f.Add([]byte(s))
	}
	secret := rfc7677Secret(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		var s SCRAMServer
		if _, _, err := s.ClientFirst([]byte(scramClientFirst)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ServerFirst(secret, scramServerNonce); err != nil {
			t.Fatal(err)
		}
		final, err := s.ClientFinal(msg)
		switch {
		case err == nil && string(msg) != scramClientFinal:
			t.Fatalf("%q accepted", msg)
		case err == nil && string(final) != scramServerFinal:
			t.Fatalf("server-final %q", final)
		case err != nil && err != ErrSCRAM && err != ErrProof:
			t.Fatalf("error %v", err)
		}
	})
}
