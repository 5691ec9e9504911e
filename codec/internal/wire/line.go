package wire

import "bytes"

// LineReader finds a backend's lines, each LF-terminated and at most max bytes long,
// LF included (Dovecot's MAX_PROXY_INPUT_SIZE). It remembers how far it has looked, so
// bytes fed again are not searched again. The zero value is ready.
type LineReader struct {
	scan int // bytes of the pending line already looked at
}

// Reset forgets how far the reader has looked (a new stream, e.g. after STARTTLS).
func (r *LineReader) Reset() { r.scan = 0 }

// Next looks for the first line of in. It returns the line without its LF and one CR
// before it, and n, how many bytes it takes with its LF; n is 0 if more bytes are
// needed, -1 if the line is too long (max bytes without an LF).
func (r *LineReader) Next(in []byte, max int) (line []byte, n int) {
	window := in[:min(len(in), max)]
	if r.scan > len(window) {
		r.scan = 0 // the caller did not re-feed what we had seen; look again
	}
	i := bytes.IndexByte(window[r.scan:], '\n')
	if i < 0 {
		if len(in) >= max {
			return nil, -1
		}
		r.scan = len(in)
		return nil, 0
	}
	i += r.scan
	r.scan = 0
	return TrimCR(in[:i]), i + 1
}
