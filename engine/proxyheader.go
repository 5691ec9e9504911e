package engine

import (
	"bufio"
	"bytes"
	"errors"
	"net/netip"

	goproxy "github.com/pires/go-proxyproto"
)

// parseProxyHeader parses one whole PROXY header (framed by codec/proxyproto) with
// go-proxyproto. It returns the client's and the original destination's addresses, or
// zero addresses for a LOCAL header or an UNKNOWN/unsupported family, where the socket's
// own addresses stay.
func parseProxyHeader(hdr []byte) (remote, local netip.AddrPort, err error) {
	h, err := goproxy.Read(bufio.NewReaderSize(bytes.NewReader(hdr), max(len(hdr), 16)))
	if err != nil {
		return remote, local, err
	}
	if h.Command.IsLocal() {
		return remote, local, nil
	}
	src, dst, ok := h.TCPAddrs()
	if !ok {
		if h.TransportProtocol == goproxy.UNSPEC {
			return remote, local, nil
		}
		return remote, local, errors.New("not a TCP address family")
	}
	remote = netip.AddrPortFrom(src.AddrPort().Addr().Unmap(), src.AddrPort().Port())
	local = netip.AddrPortFrom(dst.AddrPort().Addr().Unmap(), dst.AddrPort().Port())
	return remote, local, nil
}
