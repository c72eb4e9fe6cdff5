package access

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/fsm"
)

// bigPolicy has n IPv4 and n IPv6 prefixes of mixed lengths, and an app list.
func bigPolicy(n int) fsm.IPPolicy {
	p := fsm.IPPolicy{Name: "big"}
	for i := range n {
		p.Allow = append(p.Allow, fmt.Sprintf("%d.%d.%d.0/%d", 1+i%200, (i*7)%256, (i*13)%256, 16+i%9))
		p.Allow = append(p.Allow, fmt.Sprintf("2001:db8:%x::/%d", i, 48+i%17))
		if i%10 == 0 {
			p.Deny = append(p.Deny, fmt.Sprintf("%d.%d.%d.%d", 1+i%200, (i*7)%256, (i*13)%256, 9))
		}
	}
	p.Apps = []fsm.IPAppPolicy{{App: "web", Allow: []string{"192.0.2.0/24"}}}
	return p
}

func BenchmarkIPAllowed(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		r := mustRules(b, bigPolicy(n))
		ips := []netip.Addr{
			netip.MustParseAddr("5.35.65.1"),
			netip.MustParseAddr("203.0.113.9"),
			netip.MustParseAddr("2001:db8:3::1"),
			netip.MustParseAddr("2001:db9::1"),
		}
		b.Run(fmt.Sprintf("prefixes=%d", 2*n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				r.Allowed(ips[i&3], "")
				i++
			}
		})
	}
}

func BenchmarkClientIP(b *testing.B) {
	trusted := mustTrusted(b, "10.0.0.0/8", "2001:db8:1::/48")
	b.Run("untrusted-socket", func(b *testing.B) {
		remote := tcp("203.0.113.5:4000")
		xff := []byte("6.6.6.6")
		b.ReportAllocs()
		for b.Loop() {
			ClientIP(remote, xff, trusted)
		}
	})
	b.Run("three-hops", func(b *testing.B) {
		remote := tcp("10.0.0.1:4000")
		xff := []byte("6.6.6.6, 198.51.100.7, 10.0.0.3, 10.0.0.2")
		b.ReportAllocs()
		for b.Loop() {
			ClientIP(remote, xff, trusted)
		}
	})
}

func BenchmarkJWTVerify(b *testing.B) {
	k := testKeys()
	spec := stdSpec(b)
	spec.Claims = []fsm.ClaimToParam{{Claim: "sub", In: fsm.InHeader, Name: "X-User"}}
	v := mustJWT(b, spec)
	for _, c := range []struct {
		name   string
		method jwt.SigningMethod
		key    any
		kid    string
	}{
		{"HS256", jwt.SigningMethodHS256, []byte(hsSecret), "hs"},
		{"RS256", jwt.SigningMethodRS256, k.rsaA, "rs"},
		{"ES256", jwt.SigningMethodES256, k.ec, "es"},
		{"EdDSA", jwt.SigningMethodEdDSA, k.ed, "ed"},
	} {
		tok := sign(b, c.method, c.key, c.kid, good())
		req := new(fasthttp.Request)
		req.Header.Set("Authorization", "Bearer "+tok)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(req, t0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("refused-bad-signature", func(b *testing.B) {
		req := new(fasthttp.Request)
		req.Header.Set("Authorization", "Bearer "+sign(b, jwt.SigningMethodHS256, []byte("wrong"), "hs", good()))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(req, t0); err != ErrInvalidToken {
				b.Fatal(err)
			}
		}
	})
}
