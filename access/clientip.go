package access

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// HeaderForwardedFor is the header a proxy in front of the gateway appends the address
// it received a connection from to.
const HeaderForwardedFor = "X-Forwarded-For"

// Trusted is the node's list of proxies allowed to say who the client is, from node
// config. A nil *Trusted trusts nobody: the client is always the socket's peer.
//
// A Trusted is immutable and safe for concurrent use.
type Trusted struct {
	rs rangeSet
}

// ParseTrusted compiles the trusted proxy list: CIDRs or bare addresses, IPv4 or
// IPv6. An empty list returns nil, which trusts nobody.
func ParseTrusted(list []string) (*Trusted, error) {
	if len(list) == 0 {
		return nil, nil
	}
	rs, err := compileRanges(list)
	if err != nil {
		return nil, fmt.Errorf("trusted proxies: %w", err)
	}
	return &Trusted{rs: rs}, nil
}

// Contains reports whether ip is a trusted proxy. It never allocates.
func (t *Trusted) Contains(ip netip.Addr) bool {
	return t != nil && ip.IsValid() && t.rs.contains(ip.Unmap())
}

// SocketIP returns the address of a connection's peer, unmapped, or the zero Addr when
// remote holds none. The usual *net.TCPAddr costs no allocation; other net.Addr types
// are parsed from their String form.
func SocketIP(remote net.Addr) netip.Addr {
	switch a := remote.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case nil:
		return netip.Addr{}
	}
	if ap, err := netip.ParseAddrPort(remote.String()); err == nil {
		return ap.Addr().Unmap()
	}
	if ip, err := netip.ParseAddr(remote.String()); err == nil {
		return ip.Unmap()
	}
	return netip.Addr{}
}

// ClientIP returns the address of the client: the socket's peer, unless that peer is a
// trusted proxy, in which case X-Forwarded-For (xff, the header's value) is walked from
// the right, skipping trusted proxies, and the first untrusted address is the client.
//
// Each proxy appends the address it saw, so only the entries right of the first
// untrusted one were written by proxies we trust; everything further left came from
// the client and may be forged. Hence the walk stops at the first untrusted address,
// and an X-Forwarded-For from an untrusted peer is never read at all. When every entry
// is trusted, or an entry cannot be parsed, the answer is the leftmost address the walk
// could vouch for (a trusted proxy's address, never a forged one). Entries may carry a
// port ("192.0.2.1:5000", "[2001:db8::1]:80"), which is ignored.
//
// The result is unmapped (::ffff:192.0.2.1 comes back as 192.0.2.1). It never
// allocates for a *net.TCPAddr peer and is safe for concurrent use.
func ClientIP(remote net.Addr, xff []byte, trusted *Trusted) netip.Addr {
	ip := SocketIP(remote)
	if !trusted.Contains(ip) {
		return ip
	}
	ip, _ = walkForwarded(ip, xff, trusted)
	return ip
}

// ClientIPFromHeader is ClientIP reading X-Forwarded-For from h. When a request carries
// several X-Forwarded-For lines they form one list in order (RFC 9110, 5.3), and the
// walk goes from the last line's right end: a trusted proxy that adds its own line
// rather than appending to the client's would otherwise be bypassed by a forged first
// line. It reads the header only when the peer is trusted, and allocates nothing once
// fasthttp's header buffers have grown.
func ClientIPFromHeader(remote net.Addr, h *fasthttp.RequestHeader, trusted *Trusted) netip.Addr {
	ip := SocketIP(remote)
	if !trusted.Contains(ip) {
		return ip
	}
	lines := h.PeekAll(HeaderForwardedFor)
	for i := len(lines) - 1; i >= 0; i-- {
		var more bool
		if ip, more = walkForwarded(ip, lines[i], trusted); !more {
			break
		}
	}
	return ip
}

// walkForwarded walks one X-Forwarded-For value from the right, starting from ip, a
// trusted hop. It returns the client address found and whether the walk may continue
// into a line further left (every entry was trusted and parsed).
func walkForwarded(ip netip.Addr, xff []byte, trusted *Trusted) (netip.Addr, bool) {
	for end := len(xff); end > 0; {
		start := bytes.LastIndexByte(xff[:end], ',') + 1
		entry := bytes.TrimSpace(xff[start:end])
		end = start - 1
		if len(entry) == 0 {
			// An empty element ("a,,b") is allowed by the list syntax and says nothing.
			continue
		}
		hop, ok := parseHop(entry)
		if !ok {
			return ip, false
		}
		ip = hop
		if !trusted.Contains(ip) {
			return ip, false
		}
	}
	return ip, true
}

// parseHop reads one X-Forwarded-For entry: an address, optionally with a port, IPv6
// optionally in brackets. Zones are refused: no proxy forwards one, and refusing them
// means the address never refers to the request's bytes (see below).
func parseHop(b []byte) (netip.Addr, bool) {
	if len(b) == 0 || len(b) > 64 || bytes.IndexByte(b, '%') >= 0 {
		return netip.Addr{}, false
	}
	// netip parses strings; unsafe.String spares copying the request's bytes. Safe
	// because netip.Addr keeps no reference to the text it parsed except a zone, and
	// zones were refused above.
	s := unsafe.String(unsafe.SliceData(b), len(b))
	// Pick the form from the text's shape, so a valid entry is parsed once and no
	// failed parse (whose error allocates) runs on the hot path.
	switch colons := bytes.Count(b, colon); {
	case b[0] == '[':
		// [v6] or [v6]:port
		i := bytes.IndexByte(b, ']')
		if i < 0 || (i+1 < len(b) && b[i+1] != ':') {
			return netip.Addr{}, false
		}
		s = s[1:i]
	case colons == 1:
		// v4:port
		s = s[:bytes.IndexByte(b, ':')]
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

var colon = []byte{':'}
