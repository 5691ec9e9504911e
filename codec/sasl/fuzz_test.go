package sasl

import (
	"bytes"
	"encoding/base64"
	"testing"
)

// FuzzExchange runs an exchange on arbitrary responses. in's first byte picks the
// mechanism (bit 0) and whether the client sent an initial response (bit 1); the rest,
// split at 0xff, are the responses. Whatever they are, the exchange must not panic, must
// only ever send its three challenges, must end after done or an error, and must yield
// credentials that could name a user: a non-empty authcid, no NUL, an authzid nil or
// neither empty nor equal to the authcid.
func FuzzExchange(f *testing.F) {
	for _, c := range exchangeCases {
		var in []byte
		if c.mech[0]|0x20 == 'l' {
			in = append(in, 1)
		} else {
			in = append(in, 0)
		}
		turns := c.turns
		if len(turns) > 0 && !turns[0].none {
			in[0] |= 2
		} else if len(turns) > 0 {
			turns = turns[1:]
		}
		for i, tn := range turns {
			if i > 0 {
				in = append(in, 0xff)
			}
			in = append(in, tn.resp...)
		}
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		mech, resps := []byte(Plain), bytes.Split(in[1:], []byte{0xff})
		if in[0]&1 != 0 {
			mech = []byte(Login)
		}
		var e Exchange
		if !e.Start(mech) {
			t.Fatal("Start failed")
		}
		if in[0]&2 == 0 {
			resps = append([][]byte{nil}, resps...)
		}
		over := false
		for _, r := range resps {
			ch, done, err := e.Next(r)
			switch {
			case over:
				if err != ErrSequence {
					t.Fatalf("Next after the end: %q %v %v", ch, done, err)
				}
			case err != nil:
				if _, ok := err.(Error); !ok || done || ch != nil {
					t.Fatalf("failure: %q %v %v", ch, done, err)
				}
				if e.Credentials().Authcid != nil {
					t.Fatal("credentials after a failure")
				}
				over = true
			case done:
				c := e.Credentials()
				if len(c.Authcid) == 0 || bytes.IndexByte(c.Authzid, 0) >= 0 || bytes.IndexByte(c.Authcid, 0) >= 0 ||
					bytes.IndexByte(c.Password, 0) >= 0 || (c.Authzid != nil && (len(c.Authzid) == 0 || bytes.Equal(c.Authzid, c.Authcid))) {
					t.Fatalf("credentials %q", c)
				}
				over = true
			default:
				if s := string(ch); ch == nil || (s != "" && s != UsernamePrompt && s != PasswordPrompt) {
					t.Fatalf("challenge %q", ch)
				}
			}
		}
	})
}

// FuzzAppendDecode holds AppendDecode to what the codecs did before it: take out SP and
// HT, then decode with encoding/base64.
func FuzzAppendDecode(f *testing.F) {
	for _, c := range decodeCases {
		f.Add([]byte(c.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		squeezed := bytes.ReplaceAll(bytes.ReplaceAll(in, []byte{' '}, nil), []byte{'\t'}, nil)
		want, wantErr := base64.StdEncoding.DecodeString(string(squeezed))
		got, err := AppendDecode([]byte("pre"), in)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("AppendDecode(%q): error %v, encoding/base64 %v", in, err, wantErr)
		}
		if err == nil && string(got) != "pre"+string(want) {
			t.Fatalf("AppendDecode(%q) = %q, want pre%q", in, got, want)
		}
		if err != nil && string(got) != "pre" {
			t.Fatalf("AppendDecode(%q) failed with %q", in, got)
		}
	})
}

// FuzzPlainRoundTrip sends what AppendPlain makes through AppendDecode and a PLAIN
// exchange: the server must get the client's credentials back.
func FuzzPlainRoundTrip(f *testing.F) {
	f.Add("", "alice", "secret")
	f.Add("carol", "proxyadm", "masterpw")
	f.Add("same", "same", "")
	f.Fuzz(func(t *testing.T, authzid, authcid, pass string) {
		resp := AppendPlain(nil, authzid, authcid, pass)
		msg, err := AppendDecode(nil, resp)
		if err != nil {
			t.Fatalf("AppendDecode(%s): %v", resp, err)
		}
		var e Exchange
		e.Start([]byte(Plain))
		_, done, err := e.Next(msg)
		nuls := bytes.Count([]byte(authzid+authcid+pass), []byte{0})
		switch {
		case nuls > 0:
			if err != ErrMalformed && err != ErrEmptyUser {
				t.Fatalf("NUL in a field: %v %v", done, err)
			}
		case authcid == "":
			if err != ErrEmptyUser {
				t.Fatalf("empty authcid: %v %v", done, err)
			}
		default:
			c := e.Credentials()
			wantZ := authzid
			if authzid == authcid {
				wantZ = ""
			}
			if !done || err != nil || string(c.Authzid) != wantZ || (wantZ == "") != (c.Authzid == nil) || string(c.Authcid) != authcid || string(c.Password) != pass {
				t.Fatalf("got %v %v %q", done, err, c)
			}
		}
	})
}
