package engine

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/netip"

	goproxy "github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"
)

// proxyInfo is what a PROXY header says about the client.
type proxyInfo struct {
	remote, local netip.AddrPort // zero for LOCAL headers and UNKNOWN families: keep the socket's
	clientTLS     bool           // v2 SSL TLV with the client bit: TLS ended at the balancer
	authority     string         // v2 AUTHORITY TLV: the server name the client asked for
	uniqueID      string         // v2 UNIQUE_ID TLV: the balancer's id for this connection
}

// parseProxyHeader parses one whole PROXY header (framed by codec/proxyproto) with
// go-proxyproto.
func parseProxyHeader(hdr []byte) (proxyInfo, error) {
	var pi proxyInfo
	h, err := goproxy.Read(bufio.NewReaderSize(bytes.NewReader(hdr), max(len(hdr), 16)))
	if err != nil {
		return pi, err
	}
	if h.Command.IsLocal() {
		return pi, nil
	}
	if tlvs, err := h.TLVs(); err == nil {
		if ssl, ok := tlvparse.FindSSL(tlvs); ok {
			pi.clientTLS = ssl.ClientSSL()
		}
		for _, tlv := range tlvs {
			switch tlv.Type {
			case goproxy.PP2_TYPE_AUTHORITY:
				pi.authority = string(tlv.Value)
			case goproxy.PP2_TYPE_UNIQUE_ID:
				pi.uniqueID = string(tlv.Value)
			}
		}
	} else {
		return pi, err
	}
	src, dst, ok := h.TCPAddrs()
	if !ok {
		if h.TransportProtocol == goproxy.UNSPEC {
			return pi, nil
		}
		return pi, errors.New("not a TCP address family")
	}
	pi.remote = netip.AddrPortFrom(src.AddrPort().Addr().Unmap(), src.AddrPort().Port())
	pi.local = netip.AddrPortFrom(dst.AddrPort().Addr().Unmap(), dst.AddrPort().Port())
	return pi, nil
}

// proxyHeader is the PROXY header (version 1 or 2; 0: none) that tells a backend who the
// client is: the client's address and the one it connected to, and in v2 the session id as
// the UNIQUE_ID TLV.
func proxyHeader(version byte, req *loginRequest) []byte {
	if version == 0 {
		return nil
	}
	h := goproxy.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(req.remote), net.TCPAddrFromAddrPort(req.local))
	if version == 2 {
		_ = h.SetTLVs([]goproxy.TLV{{Type: goproxy.PP2_TYPE_UNIQUE_ID, Value: []byte(req.id)}})
	}
	b, err := h.Format()
	if err != nil {
		return nil
	}
	return b
}
