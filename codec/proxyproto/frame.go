// Package proxyproto finds where a HAProxy PROXY protocol header ends in the first bytes of
// a connection. It does not parse the header: go-proxyproto does that, but it can only
// read a whole header and cannot say "need more bytes", so the engine frames the header
// here first and hands the library exactly those bytes. Pure: no I/O, no clock.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
)

var (
	// ErrNotProxy: the bytes do not start a PROXY header (v1 or v2).
	ErrNotProxy = errors.New("proxyproto: no PROXY header")
	// ErrTooLong: a v1 line without CRLF in its 107 bytes, or a v2 header longer than
	// MaxV2 bytes.
	ErrTooLong = errors.New("proxyproto: PROXY header too long")
	// ErrBadLineEnd: a v1 line that ends in LF without CR.
	ErrBadLineEnd = errors.New("proxyproto: PROXY v1 line must end with CRLF")
)

const (
	// MaxV1 is the longest v1 line, CRLF included (the specification's 107 bytes).
	MaxV1 = 107
	// MaxV2 bounds a v2 header, its 16 fixed bytes included. The length field allows
	// 64 KiB; addresses and the TLVs a load balancer sends (SSL, authority, unique id)
	// take a few hundred bytes. go-proxyproto refuses more than 4096 too.
	MaxV2 = 16 + 4096
)

var (
	sigV1 = []byte("PROXY ")
	sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// Frame returns the length of the PROXY header at the start of in: n > 0 when the header
// is complete, 0 when more bytes are needed, or an error when in cannot start one. It
// never reads past the header, so bytes after it (the client's first command, a TLS
// ClientHello) stay for the protocol.
func Frame(in []byte) (int, error) {
	if len(in) == 0 {
		return 0, nil
	}
	switch in[0] {
	case 'P':
		if !prefixOf(in, sigV1) {
			return 0, ErrNotProxy
		}
		end := bytes.IndexByte(in[:min(len(in), MaxV1)], '\n')
		switch {
		case end < 0 && len(in) >= MaxV1:
			return 0, ErrTooLong
		case end < 0:
			return 0, nil
		case end == 0 || in[end-1] != '\r':
			return 0, ErrBadLineEnd
		}
		return end + 1, nil
	case '\r':
		if !prefixOf(in, sigV2) {
			return 0, ErrNotProxy
		}
		if len(in) < 16 {
			return 0, nil
		}
		n := 16 + int(binary.BigEndian.Uint16(in[14:16]))
		if n > MaxV2 {
			return 0, ErrTooLong
		}
		if len(in) < n {
			return 0, nil
		}
		return n, nil
	}
	return 0, ErrNotProxy
}

// prefixOf reports whether in and sig agree over their common length.
func prefixOf(in, sig []byte) bool {
	k := min(len(in), len(sig))
	return bytes.Equal(in[:k], sig[:k])
}
