package access

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/fsm"
)

func mustRules(t testing.TB, p fsm.IPPolicy) *IPRules {
	t.Helper()
	r, err := CompileIPPolicy(&p)
	if err != nil {
		t.Fatalf("CompileIPPolicy: %v", err)
	}
	return r
}

// The policy of config/testdata/good.yaml, plus IPv6 denies.
var officePolicy = fsm.IPPolicy{
	Name:  "office",
	Allow: []string{"10.0.0.0/8", "2001:db8::/32", "192.0.2.1"},
	Deny:  []string{"10.9.0.0/16", "2001:db8:bad::/48"},
	Apps:  []fsm.IPAppPolicy{{App: "web", Allow: []string{"::1", "10.1.0.0/16"}}},
}

func TestIPRulesAllowed(t *testing.T) {
	r := mustRules(t, officePolicy)
	cases := []struct {
		ip, app string
		want    bool
	}{
		// IPv4 allow list, bare address, boundaries.
		{"10.0.0.0", "", true},
		{"10.255.255.255", "", true},
		{"11.0.0.0", "", false},
		{"9.255.255.255", "", false},
		{"192.0.2.1", "", true},
		{"192.0.2.2", "", false},
		// Deny beats allow, at its boundaries too.
		{"10.9.0.0", "", false},
		{"10.9.255.255", "", false},
		{"10.8.255.255", "", true},
		{"10.10.0.0", "", true},
		// IPv4-mapped IPv6 is the same client as IPv4.
		{"::ffff:10.1.2.3", "", true},
		{"::ffff:10.9.1.1", "", false},
		{"::ffff:192.0.2.1", "", true},
		// IPv6.
		{"2001:db8::1", "", true},
		{"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "", true},
		{"2001:db9::", "", false},
		{"2001:db7:ffff::1", "", false},
		{"2001:db8:bad::1", "", false},
		{"2001:db8:bad:ffff::1", "", false},
		{"2001:db8:bae::1", "", true},
		{"::1", "", false},
		// An app with its own list may call only from it, even where the API-wide list
		// allows, and may call from it where the API-wide list does not.
		{"::1", "web", true},
		{"10.1.200.3", "web", true},
		{"10.2.0.1", "web", false},
		{"2001:db8::1", "web", false},
		// ...but deny still wins for it.
		{"10.9.0.1", "web", false},
		// Other apps follow the API-wide list.
		{"10.2.0.1", "mobile", true},
		{"::1", "mobile", false},
		// An invalid address is refused by any policy.
		{"", "", false},
	}
	for _, c := range cases {
		var ip netip.Addr
		if c.ip != "" {
			ip = netip.MustParseAddr(c.ip)
		}
		if got := r.Allowed(ip, c.app); got != c.want {
			t.Errorf("Allowed(%q, %q) = %v, want %v", c.ip, c.app, got, c.want)
		}
	}
	if !r.NeedsApp() {
		t.Error("NeedsApp() = false for a policy with app lists")
	}
}

func TestIPRulesEmptyAllowMeansAll(t *testing.T) {
	r := mustRules(t, fsm.IPPolicy{Name: "blocklist", Deny: []string{"203.0.113.0/24", "2001:db8::/64"}})
	for ip, want := range map[string]bool{
		"203.0.113.7":        false,
		"203.0.114.1":        true,
		"2001:db8::99":       false,
		"2001:db8:0:1::":     true,
		"::ffff:203.0.113.9": false,
		"8.8.8.8":            true,
	} {
		if got := r.Allowed(netip.MustParseAddr(ip), ""); got != want {
			t.Errorf("Allowed(%s) = %v, want %v", ip, got, want)
		}
	}
	if r.NeedsApp() {
		t.Error("NeedsApp() = true for a policy without app lists")
	}
	var none *IPRules
	if !none.Allowed(netip.MustParseAddr("1.2.3.4"), "x") || none.NeedsApp() {
		t.Error("a nil *IPRules must allow everyone and need no app")
	}
}

func TestIPFamiliesStayApart(t *testing.T) {
	// ::/0 is every IPv6 client, not every client; 0.0.0.0/0 is every IPv4 client.
	r6 := mustRules(t, fsm.IPPolicy{Name: "v6", Deny: []string{"::/0"}})
	if r6.Allowed(netip.MustParseAddr("2001:db8::1"), "") {
		t.Error("::/0 deny let an IPv6 client in")
	}
	if !r6.Allowed(netip.MustParseAddr("192.0.2.1"), "") || !r6.Allowed(netip.MustParseAddr("::ffff:192.0.2.1"), "") {
		t.Error("::/0 deny refused an IPv4 client")
	}
	r4 := mustRules(t, fsm.IPPolicy{Name: "v4", Allow: []string{"0.0.0.0/0"}})
	if !r4.Allowed(netip.MustParseAddr("255.255.255.255"), "") || r4.Allowed(netip.MustParseAddr("::2"), "") {
		t.Error("0.0.0.0/0 allow must cover all IPv4 and no IPv6")
	}
	// A mapped prefix written in IPv6 form is the IPv4 prefix.
	rm := mustRules(t, fsm.IPPolicy{Name: "mapped", Allow: []string{"::ffff:198.51.100.0/120"}})
	if !rm.Allowed(netip.MustParseAddr("198.51.100.200"), "") || rm.Allowed(netip.MustParseAddr("198.51.101.0"), "") {
		t.Error("::ffff:198.51.100.0/120 must mean 198.51.100.0/24")
	}
	// The whole IPv6 space as one allow entry, at its very ends.
	ra := mustRules(t, fsm.IPPolicy{Name: "all6", Allow: []string{"::/0"}})
	for _, s := range []string{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
		if !ra.Allowed(netip.MustParseAddr(s), "") {
			t.Errorf("::/0 allow refused %s", s)
		}
	}
}

// TestRangeSetAgainstLinear checks the merged, binary-searched table against a plain
// scan of the prefixes, over overlapping, nested and adjacent prefixes of every length.
func TestRangeSetAgainstLinear(t *testing.T) {
	var list []string
	var prefixes []netip.Prefix
	// Deterministic pseudo-random prefixes (an LCG: the test must be reproducible).
	x := uint64(12345)
	next := func() uint64 { x = x*6364136223846793005 + 1442695040888963407; return x >> 11 }
	for i := range 300 {
		var p netip.Prefix
		if i%2 == 0 {
			a := netip.AddrFrom4([4]byte{byte(next()) & 0x0f, byte(next()), byte(next()), byte(next())})
			p = netip.PrefixFrom(a, 4+int(next()%29)).Masked()
		} else {
			var b [16]byte
			b[0], b[1] = 0x20, 0x01
			for j := 2; j < 16; j++ {
				b[j] = byte(next())
			}
			b[2] &= 0x0f
			p = netip.PrefixFrom(netip.AddrFrom16(b), 16+int(next()%113)).Masked()
		}
		prefixes = append(prefixes, p)
		list = append(list, p.String())
	}
	rs, err := compileRanges(list)
	if err != nil {
		t.Fatal(err)
	}
	probe := func(a netip.Addr) {
		want := false
		for _, p := range prefixes {
			if p.Contains(a) {
				want = true
				break
			}
		}
		if got := rs.contains(a); got != want {
			t.Fatalf("contains(%s) = %v, want %v", a, got, want)
		}
	}
	for _, p := range prefixes {
		// Each prefix's first and last address, and the addresses just outside it.
		first := p.Addr()
		last := lastAddr(p)
		probe(first)
		probe(last)
		if prev := first.Prev(); prev.IsValid() {
			probe(prev)
		}
		if nx := last.Next(); nx.IsValid() {
			probe(nx)
		}
	}
	for range 20000 {
		if next()%2 == 0 {
			probe(netip.AddrFrom4([4]byte{byte(next()) & 0x0f, byte(next()), byte(next()), byte(next())}))
		} else {
			var b [16]byte
			b[0], b[1] = 0x20, 0x01
			for j := 2; j < 16; j++ {
				b[j] = byte(next())
			}
			b[2] &= 0x0f
			probe(netip.AddrFrom16(b))
		}
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	if p.Addr().Is4() {
		b := p.Addr().As4()
		for i := p.Bits(); i < 32; i++ {
			b[i/8] |= 0x80 >> (i % 8)
		}
		return netip.AddrFrom4(b)
	}
	b := p.Addr().As16()
	for i := p.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom16(b)
}

func TestCompileIPPolicyErrors(t *testing.T) {
	for _, p := range []fsm.IPPolicy{
		{Name: "a", Allow: []string{"10.0.0.0/33"}},
		{Name: "b", Deny: []string{"not-an-ip"}},
		{Name: "c", Apps: []fsm.IPAppPolicy{{App: "web", Allow: []string{"fe80::1%eth0"}}}},
	} {
		_, err := CompileIPPolicy(&p)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", p.Name)) {
			t.Errorf("policy %s: err = %v, want an error naming the policy", p.Name, err)
		}
	}
	if r, err := CompileIPPolicy(nil); r != nil || err != nil {
		t.Errorf("CompileIPPolicy(nil) = %v, %v", r, err)
	}
}
