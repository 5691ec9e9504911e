package tlsio

import (
	"bytes"
	"crypto/tls"
	"reflect"
	"unsafe"
)

// Compact releases the input buffers a tls.Conn keeps after large records. crypto/tls
// grows its raw-input bytes.Buffer to a whole record (16 KiB and more) and never shrinks
// it, so every session that once received a big record (an APPEND from the client, a
// FETCH from a TLS backend) would pin about 17–25 KiB for the rest of its life, three or
// four times what an idle TLS session costs otherwise.
//
// There is no API for this, so Compact reaches the unexported fields rawInput
// (bytes.Buffer), input (bytes.Reader, a view into rawInput) and hand (bytes.Buffer). It
// checks their names and types once, at start, and does nothing if they differ (a new Go
// release): the cost of a change is memory, never correctness. It drops a buffer only when
// it holds no unread byte, and must be called by the only goroutine using the Conn, between
// calls (the relay worker after a Read that would block; crypto/tls's own locks are not
// taken). It reports whether it released anything.
func Compact(c *tls.Conn) bool {
	if !compactOK || !CompactEnabled || c == nil {
		return false
	}
	v := reflect.ValueOf(c).Elem()
	raw := (*bytes.Buffer)(unsafe.Pointer(v.Field(rawInputField).UnsafeAddr()))
	in := (*bytes.Reader)(unsafe.Pointer(v.Field(inputField).UnsafeAddr()))
	hand := (*bytes.Buffer)(unsafe.Pointer(v.Field(handField).UnsafeAddr()))
	released := false
	if raw.Len() == 0 && in.Len() == 0 && raw.Cap() > compactMin {
		*raw = bytes.Buffer{}
		in.Reset(nil) // a drained Reader still points into the old array
		released = true
	}
	if hand.Len() == 0 && hand.Cap() > compactMin {
		*hand = bytes.Buffer{}
		released = true
	}
	return released
}

// CompactEnabled turns Compact off when false: for measuring what it saves.
var CompactEnabled = true

// compactMin is 0: every drained buffer goes. A threshold of 2 KiB kept exactly the
// ClientHello-sized buffers of clients offering X25519MLKEM768 (2 KiB raw input, 1.5 KiB
// handshake), 2.7 KB of an idle session's 8 KB; the relay only compacts after a drained
// read, so the cost is one allocation per burst (bench/results/2026-11-22-tls.md).
const compactMin = 0

var (
	compactOK                            bool
	rawInputField, inputField, handField int
)

func init() {
	t := reflect.TypeFor[tls.Conn]()
	find := func(name string, typ reflect.Type) int {
		f, ok := t.FieldByName(name)
		if !ok || f.Type != typ || len(f.Index) != 1 {
			return -1
		}
		return f.Index[0]
	}
	rawInputField = find("rawInput", reflect.TypeFor[bytes.Buffer]())
	inputField = find("input", reflect.TypeFor[bytes.Reader]())
	handField = find("hand", reflect.TypeFor[bytes.Buffer]())
	compactOK = rawInputField >= 0 && inputField >= 0 && handField >= 0
}

// CompactSupported says whether Compact can work with this Go release's crypto/tls.
func CompactSupported() bool { return compactOK }
