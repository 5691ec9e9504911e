package sasl

import (
	"bytes"
	"encoding/base64"
	"slices"
)

// AppendDecode appends the base64 response src, decoded, to dst, as Dovecot's auth
// process decodes it: blanks (SP, HT, CR, LF) are skipped wherever they are, and padding
// is required. On success the result is never nil, so that an empty response is not
// taken for none. On failure it returns dst (perhaps grown) with what lay past its length
// wiped, and ErrBase64.
func AppendDecode(dst, src []byte) ([]byte, error) {
	n := len(dst)
	var squeezed []byte
	if bytes.ContainsAny(src, " \t") { // base64 skips CR and LF itself
		// The response without its blanks goes past the room its decoding needs, in
		// dst's own array: no other buffer, and no overlap.
		m := base64.StdEncoding.DecodedLen(len(src))
		dst = slices.Grow(dst, m+len(src))
		squeezed = dst[n+m : n+m]
		for _, c := range src {
			if c != ' ' && c != '\t' {
				squeezed = append(squeezed, c)
			}
		}
		src = squeezed
	}
	out, err := base64.StdEncoding.AppendDecode(dst[:n], src)
	clear(squeezed) // it held the response, encoded
	if err != nil {
		clear(out[n:cap(out)])
		return out[:n], ErrBase64
	}
	if out == nil {
		out = []byte{}
	}
	return out, nil
}

// Cancelled reports whether a response is "*", with which the client cancels the
// exchange (RFC 4422 section 3.5; each protocol's profile says how the line is framed).
func Cancelled(response []byte) bool { return len(response) == 1 && response[0] == '*' }
