package wire

import (
	"strings"
	"testing"

	"doorman/codec/login"
)

func TestOutput(t *testing.T) {
	var o Output
	o.Begin()
	if acts := o.End(); acts != nil {
		t.Fatalf("empty call: %v", acts)
	}
	o.Begin()
	o.B = append(o.B, "a\r\n"...)
	o.Emit(login.Action{Kind: login.ActAuth})
	o.B = append(o.B, "b\r\n"...)
	o.Close("bye")
	acts := o.End()
	if len(acts) != 3 || acts[0].Kind != login.ActWrite || string(acts[0].Data) != "a\r\n" ||
		acts[1].Kind != login.ActAuth || acts[2].Kind != login.ActClose ||
		string(acts[2].Data) != "b\r\n" || acts[2].Reason != "bye" {
		t.Fatalf("actions: %+v", acts)
	}
	// Data can't be appended to over the next bytes written.
	if cap(acts[0].Data) != len(acts[0].Data) {
		t.Fatalf("Data has spare capacity %d", cap(acts[0].Data)-len(acts[0].Data))
	}
	o.Begin()
	o.Close("")
	if acts := o.End(); len(acts) != 1 || acts[0].Kind != login.ActClose || len(acts[0].Data) != 0 {
		t.Fatalf("bare close: %+v", acts)
	}
	o.Begin()
	o.B = append(o.B, make([]byte, MaxOutput)...)
	if o.Full() {
		t.Fatal("full at MaxOutput")
	}
	o.B = append(o.B, 0)
	if !o.Full() {
		t.Fatal("not full past MaxOutput")
	}
	o.Begin() // drops the grown buffer
	if cap(o.B) != firstBuffer {
		t.Fatalf("kept a buffer of %d", cap(o.B))
	}
}

func TestOutputAllocs(t *testing.T) {
	var o Output
	o.Begin()
	n := testing.AllocsPerRun(100, func() {
		o.Begin()
		o.B = append(o.B, "* OK\r\n"...)
		o.Emit(login.Action{Kind: login.ActID})
		o.End()
	})
	if n != 0 {
		t.Fatalf("%v allocations per call", n)
	}
}

func TestLineReader(t *testing.T) {
	var r LineReader
	in := []byte("abc")
	if _, n := r.Next(in, 8); n != 0 {
		t.Fatalf("partial line: n=%d", n)
	}
	in = append(in, "d\r\nef\n"...)
	line, n := r.Next(in, 8)
	if string(line) != "abcd" || n != 6 {
		t.Fatalf("got %q %d", line, n)
	}
	line, n = r.Next(in[n:], 8)
	if string(line) != "ef" || n != 3 {
		t.Fatalf("got %q %d", line, n)
	}
	// Re-fed with fewer bytes than seen: look again from the start.
	if _, n := r.Next([]byte("abcdefg"), 8); n != 0 {
		t.Fatalf("n=%d", n)
	}
	if line, n := r.Next([]byte("a\n"), 8); string(line) != "a" || n != 2 {
		t.Fatalf("got %q %d", line, n)
	}
	if _, n := r.Next([]byte("12345678\n"), 8); n != -1 {
		t.Fatalf("too long: n=%d", n)
	}
	if line, n := r.Next([]byte("1234567\n"), 8); string(line) != "1234567" || n != 8 {
		t.Fatalf("longest: %q %d", line, n)
	}
}

func TestText(t *testing.T) {
	if got := string(AppendText(nil, "a\r\nb\x7fc")); got != "a  b c" {
		t.Errorf("AppendText: %q", got)
	}
	if got := string(TrimCR([]byte("a\r\r"))); got != "a\r" {
		t.Errorf("TrimCR: %q", got)
	}
	if !EqualUpper([]byte("LoGiN"), "LOGIN") || EqualUpper([]byte("LOGIN"), "login") || EqualUpper([]byte("LOG"), "LOGIN") {
		t.Error("EqualUpper")
	}
	q := []byte(`a\"b\\c\`)
	if got := string(AppendUnescaped(nil, q, true)); got != `a"b\c\` || UnescapedLen(q, true) != len(got) {
		t.Errorf("AppendUnescaped: %q, len %d", got, UnescapedLen(q, true))
	}
	if got := string(AppendUnescaped(nil, q, false)); got != string(q) || UnescapedLen(q, false) != len(q) {
		t.Errorf("AppendUnescaped unescaped: %q", got)
	}
	if got := string(AppendTabEscaped(nil, "a\tb\x01c\rd\ne\x00")); got != "a\x01tb\x011c\x01rd\x01ne\x00" {
		t.Errorf("AppendTabEscaped: %q", got)
	}
	long := strings.Repeat("é", 100)
	got := Sanitize([]byte(long), 160)
	if len(got) > 160 || !strings.HasSuffix(got, "...") || !strings.HasPrefix(got, "éé") {
		t.Errorf("Sanitize long: %d bytes %q", len(got), got)
	}
	if got := Sanitize([]byte("a\x01b\xffc"), 160); got != "a?b?c" {
		t.Errorf("Sanitize: %q", got)
	}
}
