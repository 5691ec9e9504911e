package engine

import (
	"encoding/base64"
	"encoding/binary"
	"net/netip"
	"time"
)

// sessionID makes an id in Dovecot's format (client_get_session_id): base64 of the
// accept time in microseconds (6 bytes, little endian), the client's port (2 bytes) and
// its address, so ids from Doorman and from Dovecot read alike in a backend's logs. Two
// connections from one address and port in the same microsecond cannot exist.
func sessionID(t time.Time, remote netip.AddrPort) string {
	var b [6 + 2 + 16]byte
	us := uint64(t.UnixMicro())
	for i := 0; i < 6; i++ {
		b[i] = byte(us >> (8 * i))
	}
	binary.LittleEndian.PutUint16(b[6:], remote.Port())
	a := remote.Addr().Unmap()
	n := 8
	if a.Is4() {
		v := a.As4()
		n += copy(b[n:], v[:])
	} else {
		v := a.As16()
		n += copy(b[n:], v[:])
	}
	return base64.StdEncoding.EncodeToString(b[:n])
}
