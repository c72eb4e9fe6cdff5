package access

import (
	"net"
	"net/netip"
	"testing"

	"github.com/valyala/fasthttp"
)

func tcp(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

func mustTrusted(t testing.TB, list ...string) *Trusted {
	t.Helper()
	tr, err := ParseTrusted(list)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestClientIP(t *testing.T) {
	trusted := mustTrusted(t, "10.0.0.0/8", "2001:db8:1::/48", "192.0.2.10")
	cases := []struct {
		name   string
		remote string
		xff    string
		want   string
	}{
		{"no proxy", "203.0.113.5:4000", "", "203.0.113.5"},
		{"spoofed XFF from an untrusted socket is ignored", "203.0.113.5:4000", "1.1.1.1", "203.0.113.5"},
		{"spoofed XFF with trusted-looking hops from an untrusted socket", "203.0.113.5:4000", "1.1.1.1, 10.0.0.1", "203.0.113.5"},
		{"one trusted proxy", "10.0.0.1:4000", "198.51.100.7", "198.51.100.7"},
		{"two trusted hops", "10.0.0.1:4000", "198.51.100.7, 10.0.0.2, 192.0.2.10", "198.51.100.7"},
		{"client forged entries left of the real client", "10.0.0.1:4000", "6.6.6.6, 10.0.0.9, 198.51.100.7", "198.51.100.7"},
		{"untrusted hop in the middle stops the walk", "10.0.0.1:4000", "198.51.100.7, 203.0.113.99, 10.0.0.2", "203.0.113.99"},
		{"trusted socket, no XFF", "10.0.0.1:4000", "", "10.0.0.1"},
		{"every hop trusted: leftmost", "10.0.0.1:4000", "10.0.0.3, 10.0.0.2", "10.0.0.3"},
		{"garbage stops at the last good hop", "10.0.0.1:4000", "198.51.100.7, garbage, 10.0.0.2", "10.0.0.2"},
		{"zones refused", "10.0.0.1:4000", "fe80::1%eth0", "10.0.0.1"},
		{"entries with ports", "10.0.0.1:4000", "198.51.100.7:5555, 10.0.0.2:80", "198.51.100.7"},
		{"bracketed IPv6 with and without port", "10.0.0.1:4000", "[2001:db8:9::1]:443, [2001:db8:1::2]", "2001:db8:9::1"},
		{"empty elements and spaces", "10.0.0.1:4000", " 198.51.100.7 ,, 10.0.0.2 ,", "198.51.100.7"},
		{"IPv6 trusted proxy", "[2001:db8:1::5]:4000", "2001:db8:9::1", "2001:db8:9::1"},
		{"IPv4-mapped socket is a trusted IPv4 proxy", "[::ffff:10.0.0.1]:4000", "::ffff:198.51.100.7", "198.51.100.7"},
		{"bad bracket", "10.0.0.1:4000", "[2001:db8::1]x", "10.0.0.1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := netip.MustParseAddr(c.want)
			if got := ClientIP(tcp(c.remote), []byte(c.xff), trusted); got != want {
				t.Errorf("ClientIP = %v, want %v", got, want)
			}
			var h fasthttp.RequestHeader
			if c.xff != "" {
				h.Set(HeaderForwardedFor, c.xff)
			}
			if got := ClientIPFromHeader(tcp(c.remote), &h, trusted); got != want {
				t.Errorf("ClientIPFromHeader = %v, want %v", got, want)
			}
		})
	}
}

func TestClientIPNobodyTrusted(t *testing.T) {
	if got := ClientIP(tcp("10.0.0.1:1"), []byte("198.51.100.7"), nil); got != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("nil Trusted: got %v", got)
	}
	if tr, err := ParseTrusted(nil); tr != nil || err != nil {
		t.Errorf("ParseTrusted(nil) = %v, %v", tr, err)
	}
	if _, err := ParseTrusted([]string{"10.0.0.0/8", "bogus"}); err == nil {
		t.Error("ParseTrusted accepted a bad entry")
	}
}

// A trusted proxy that adds its own X-Forwarded-For line, rather than appending to the
// client's, must not let the client's forged first line win.
func TestClientIPSeveralHeaderLines(t *testing.T) {
	trusted := mustTrusted(t, "10.0.0.0/8")
	var req fasthttp.Request
	req.Header.Add(HeaderForwardedFor, "6.6.6.6")
	req.Header.Add(HeaderForwardedFor, "198.51.100.7, 10.0.0.2")
	if got := ClientIPFromHeader(tcp("10.0.0.1:1"), &req.Header, trusted); got != netip.MustParseAddr("198.51.100.7") {
		t.Errorf("got %v, want 198.51.100.7", got)
	}
	// When the last line is all trusted hops, the walk continues into the line before.
	req.Header.Del(HeaderForwardedFor)
	req.Header.Add(HeaderForwardedFor, "198.51.100.8")
	req.Header.Add(HeaderForwardedFor, "10.0.0.3")
	if got := ClientIPFromHeader(tcp("10.0.0.1:1"), &req.Header, trusted); got != netip.MustParseAddr("198.51.100.8") {
		t.Errorf("got %v, want 198.51.100.8", got)
	}
}

// otherAddr is a net.Addr that is neither TCP nor UDP, as an in-memory listener hands out.
type otherAddr string

func (a otherAddr) Network() string { return "pipe" }
func (a otherAddr) String() string  { return string(a) }

func TestSocketIP(t *testing.T) {
	cases := []struct {
		remote net.Addr
		want   netip.Addr
	}{
		{tcp("192.0.2.1:80"), netip.MustParseAddr("192.0.2.1")},
		{&net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 53}, netip.MustParseAddr("2001:db8::1")},
		{otherAddr("198.51.100.1:1234"), netip.MustParseAddr("198.51.100.1")},
		{otherAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.2")},
		{otherAddr("pipe"), netip.Addr{}},
		{nil, netip.Addr{}},
	}
	for _, c := range cases {
		if got := SocketIP(c.remote); got != c.want {
			t.Errorf("SocketIP(%v) = %v, want %v", c.remote, got, c.want)
		}
	}
}

func FuzzClientIP(f *testing.F) {
	for _, s := range []string{"", "1.2.3.4", "1.2.3.4, 10.0.0.1", "[::1]:80", "::ffff:1.2.3.4", "a,,b", "[", "]", "1.2.3.4:", "%", ", ,"} {
		f.Add(s)
	}
	trusted := mustTrusted(f, "10.0.0.0/8", "::1/128")
	remote := tcp("10.0.0.1:1")
	stranger, strangerIP := tcp("203.0.113.1:1"), netip.MustParseAddr("203.0.113.1")
	f.Fuzz(func(t *testing.T, xff string) {
		got := ClientIP(remote, []byte(xff), trusted)
		if !got.IsValid() {
			t.Fatalf("ClientIP(%q) returned no address", xff)
		}
		if got.Is4In6() {
			t.Fatalf("ClientIP(%q) = %v, not unmapped", xff, got)
		}
		// From an untrusted peer, X-Forwarded-For is never read.
		if got := ClientIP(stranger, []byte(xff), trusted); got != strangerIP {
			t.Fatalf("untrusted peer with XFF %q: got %v", xff, got)
		}
	})
}
