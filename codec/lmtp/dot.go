package lmtp

import "bytes"

// The DATA body travels dot-stuffed and ends with a line holding a single ".". Doorman
// decodes what the client sends and encodes afresh for the backends, rather than passing
// the bytes through, so a backend always sees the message Doorman saw: an end marker
// that Doorman took for text can never end the message early at a backend (SMTP
// smuggling), and bare LFs reach it as CRLF.

// DotDecoder removes the dot-stuffing of a DATA body and finds its end, as Dovecot's
// istream-dot does (send_last_lf): a line starts at the beginning of the body or after
// LF (with or without CR before it); at a line start, "." followed by LF or CRLF ends the
// body, and any other leading "." is dropped. The line ending before the final "." is
// part of the message. Its state carries over from one call to the next, so the body can
// arrive in pieces of any size, and it never holds more than two bytes.
//
// One deviation: for ".", CR and a byte other than LF at a line start, Dovecot drops that
// byte along with the dot (a quirk of its state machine); DotDecoder keeps it.
type DotDecoder struct {
	st   uint8
	pend [2]byte // the line ending seen before a possible "."
	np   uint8
}

const (
	dsLineStart = iota // at a line start, the line ending in pend
	dsText
	dsCR    // a CR was read
	dsDot   // line start, "."
	dsDotCR // line start, ".", CR
	dsDone  // the final "." line was read
)

// Reset prepares the decoder for a new body.
func (d *DotDecoder) Reset() { *d = DotDecoder{} }

// Done reports that the end of the body was found.
func (d *DotDecoder) Done() bool { return d.st == dsDone }

// Decode decodes src into dst. It returns the bytes written and read; it stops when dst
// is full, src is used up, or the end of the body is read (done; nothing after the
// final line is read). With len(dst) >= len(src)+2 it always reads all of src or up to
// the end.
func (d *DotDecoder) Decode(dst, src []byte) (nDst, nSrc int, done bool) {
	// flush moves the held line ending to dst, as far as it fits.
	flush := func() bool {
		for d.np > 0 {
			if nDst == len(dst) {
				return false
			}
			dst[nDst] = d.pend[0]
			nDst++
			d.pend[0] = d.pend[1]
			d.np--
		}
		return true
	}
	for nSrc < len(src) {
		c := src[nSrc]
		switch d.st {
		case dsDone:
			return nDst, nSrc, true
		case dsText:
			switch c {
			case '\r':
				d.st = dsCR
				nSrc++
			case '\n':
				d.st, d.pend[0], d.np = dsLineStart, '\n', 1
				nSrc++
			default:
				// Copy the run up to the next line break at once.
				run := bytes.IndexAny(src[nSrc:], "\r\n")
				if run < 0 {
					run = len(src) - nSrc
				}
				n := copy(dst[nDst:], src[nSrc:nSrc+run])
				if n == 0 {
					return nDst, nSrc, false
				}
				nDst += n
				nSrc += n
			}
		case dsCR:
			if c == '\n' {
				d.st, d.pend, d.np = dsLineStart, [2]byte{'\r', '\n'}, 2
				nSrc++
				continue
			}
			// A lone CR is text; c is looked at again as text.
			if nDst == len(dst) {
				return nDst, nSrc, false
			}
			dst[nDst] = '\r'
			nDst++
			d.st = dsText
		case dsLineStart:
			if c == '.' {
				d.st = dsDot
				nSrc++
				continue
			}
			if !flush() {
				return nDst, nSrc, false
			}
			d.st = dsText
		case dsDot:
			switch c {
			case '\r':
				d.st = dsDotCR
				nSrc++
			case '\n':
				if !flush() {
					return nDst, nSrc, false
				}
				d.st = dsDone
				return nDst, nSrc + 1, true
			default:
				// A stuffed dot: drop it, c is text.
				if !flush() {
					return nDst, nSrc, false
				}
				d.st = dsText
			}
		case dsDotCR:
			if c == '\n' {
				if !flush() {
					return nDst, nSrc, false
				}
				d.st = dsDone
				return nDst, nSrc + 1, true
			}
			// ".", CR, then not LF: the dot was stuffing, the CR is text.
			if !flush() {
				return nDst, nSrc, false
			}
			d.st = dsCR
		}
	}
	return nDst, nSrc, d.st == dsDone
}

// DotEncoder dot-stuffs a message for a backend as Dovecot's ostream-dot does: a bare LF
// becomes CRLF, a "." at a line start is doubled, and Finish writes the end line.
type DotEncoder struct{ st uint8 }

const (
	esInit = iota // nothing written yet: a line start
	esNone
	esCR
	esCRLF
)

// Reset prepares the encoder for a new message.
func (e *DotEncoder) Reset() { e.st = esInit }

// Append appends the encoding of src to dst; it is at most 2*len(src) bytes.
func (e *DotEncoder) Append(dst, src []byte) []byte {
	start := 0
	for i := 0; i < len(src); i++ {
		c := src[i]
		var add string
		switch e.st {
		case esNone:
			switch c {
			case '\n':
				e.st, add = esCRLF, "\r\n"
			case '\r':
				e.st = esCR
			default:
				// Nothing changes until the next line break.
				j := bytes.IndexAny(src[i:], "\r\n")
				if j < 0 {
					return append(dst, src[start:]...)
				}
				i += j - 1
			}
		case esCR:
			switch c {
			case '\r':
			case '\n':
				e.st = esCRLF
			default:
				e.st = esNone
			}
		case esInit, esCRLF:
			switch c {
			case '\r':
				e.st = esCR
			case '\n':
				e.st, add = esCRLF, "\r\n"
			case '.':
				e.st, add = esNone, ".."
			default:
				e.st = esNone
			}
		}
		if add != "" {
			dst = append(dst, src[start:i]...)
			dst = append(dst, add...)
			start = i + 1
		}
	}
	return append(dst, src[start:]...)
}

// Finish appends the end of the body: ".\r\n" after a complete line, else "\r\n.\r\n".
func (e *DotEncoder) Finish(dst []byte) []byte {
	if e.st == esCRLF {
		return append(dst, ".\r\n"...)
	}
	return append(dst, "\r\n.\r\n"...)
}
