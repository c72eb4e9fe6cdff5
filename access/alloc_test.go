//go:build !race

package access

import (
	"net/netip"
	"testing"

	"github.com/valyala/fasthttp"
)

// The race detector allocates on its own, so these run only without it.

func TestAllowedAllocatesNothing(t *testing.T) {
	r := mustRules(t, officePolicy)
	ips := []netip.Addr{
		netip.MustParseAddr("10.1.2.3"),
		netip.MustParseAddr("::ffff:10.9.0.1"),
		netip.MustParseAddr("2001:db8::1"),
		netip.MustParseAddr("::1"),
	}
	n := testing.AllocsPerRun(200, func() {
		for _, ip := range ips {
			r.Allowed(ip, "")
			r.Allowed(ip, "web")
			r.Allowed(ip, "mobile")
		}
	})
	if n != 0 {
		t.Errorf("Allowed allocates %v times per run", n)
	}
}

func TestClientIPAllocatesNothing(t *testing.T) {
	trusted := mustTrusted(t, "10.0.0.0/8", "2001:db8:1::/48")
	remote := tcp("10.0.0.1:4000")
	remote6 := tcp("[2001:db8:1::5]:4000")
	untrusted := tcp("203.0.113.5:4000")
	xff := []byte("6.6.6.6, 198.51.100.7:5555, [2001:db8:1::3]:443, 10.0.0.2, 2001:db8:1::9")
	n := testing.AllocsPerRun(200, func() {
		ClientIP(remote, xff, trusted)
		ClientIP(remote6, xff, trusted)
		ClientIP(untrusted, xff, trusted)
	})
	if n != 0 {
		t.Errorf("ClientIP allocates %v times per run", n)
	}

	var h fasthttp.RequestHeader
	h.Add(HeaderForwardedFor, "6.6.6.6")
	h.Add(HeaderForwardedFor, "198.51.100.7, 10.0.0.2")
	ClientIPFromHeader(remote, &h, trusted) // let fasthttp grow its buffer once
	n = testing.AllocsPerRun(200, func() {
		ClientIPFromHeader(remote, &h, trusted)
	})
	if n != 0 {
		t.Errorf("ClientIPFromHeader allocates %v times per run", n)
	}
}
