package access

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// A rangeSet answers "is this address in any of these CIDRs?" in O(log n) without
// allocating. At compile time every prefix becomes an inclusive address range, the
// ranges are sorted and overlapping or adjacent ones merged, so a lookup is one binary
// search for the last range starting at or below the address. Merging is what keeps
// the answer exact whatever the mix of prefix lengths: with disjoint ranges, the only
// range that can hold an address is the one just before it.
//
// IPv4 and IPv6 live in separate tables. An IPv4-mapped IPv6 prefix
// (::ffff:10.0.0.0/104) is stored as the IPv4 prefix it denotes, and addresses are
// unmapped before lookup, so 10.0.0.1 and ::ffff:10.0.0.1 are the same client. A plain
// IPv6 prefix that merely contains the mapped block (::/0, ::/64) matches IPv6 clients
// only: writing ::/0 should not silently also cover every IPv4 client.
type rangeSet struct {
	v4 []span4
	v6 []span6
}

type span4 struct{ first, last uint32 }

// u128 is an IPv6 address as two big-endian halves, so it compares as integers do.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

// next returns a+1 and whether it did not wrap past the last address.
func (a u128) next() (u128, bool) {
	lo := a.lo + 1
	hi := a.hi
	if lo == 0 {
		hi++
		if hi == 0 {
			return u128{}, false
		}
	}
	return u128{hi, lo}, true
}

type span6 struct{ first, last u128 }

func addr6(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func addr4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

// parsePrefix reads a CIDR or a bare address (a single-address prefix), the two forms
// fsm's validator accepts, and returns it masked with IPv4-mapped forms unmapped.
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: %v", s, err)
		}
		a, bits := p.Addr(), p.Bits()
		if a.Is4In6() && bits >= 96 {
			a, bits = a.Unmap(), bits-96
		}
		return netip.PrefixFrom(a, bits).Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// compileRanges parses every entry of list into one merged rangeSet.
func compileRanges(list []string) (rangeSet, error) {
	var rs rangeSet
	for _, s := range list {
		p, err := parsePrefix(s)
		if err != nil {
			return rangeSet{}, err
		}
		rs.add(p)
	}
	rs.merge()
	return rs, nil
}

func (rs *rangeSet) add(p netip.Prefix) {
	host := p.Addr().BitLen() - p.Bits()
	if p.Addr().Is4() {
		first := addr4(p.Addr())
		var mask uint32
		if host == 32 {
			mask = ^uint32(0)
		} else {
			mask = uint32(1)<<host - 1
		}
		rs.v4 = append(rs.v4, span4{first, first | mask})
		return
	}
	first := addr6(p.Addr())
	var mask u128
	switch {
	case host >= 64:
		mask.lo = ^uint64(0)
		if host == 128 {
			mask.hi = ^uint64(0)
		} else {
			mask.hi = uint64(1)<<(host-64) - 1
		}
	case host > 0:
		mask.lo = uint64(1)<<host - 1
	}
	rs.v6 = append(rs.v6, span6{first, u128{first.hi | mask.hi, first.lo | mask.lo}})
}

// merge sorts the ranges and joins overlapping and adjacent ones, which lookup needs.
func (rs *rangeSet) merge() {
	slices.SortFunc(rs.v4, func(a, b span4) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return 0
	})
	out4 := rs.v4[:0]
	for _, s := range rs.v4 {
		if n := len(out4); n > 0 {
			last := &out4[n-1]
			if last.last == ^uint32(0) || s.first <= last.last+1 {
				last.last = max(last.last, s.last)
				continue
			}
		}
		out4 = append(out4, s)
	}
	rs.v4 = slices.Clip(out4)

	slices.SortFunc(rs.v6, func(a, b span6) int {
		switch {
		case a.first.less(b.first):
			return -1
		case b.first.less(a.first):
			return 1
		}
		return 0
	})
	out6 := rs.v6[:0]
	for _, s := range rs.v6 {
		if n := len(out6); n > 0 {
			last := &out6[n-1]
			nx, ok := last.last.next()
			if !ok || !nx.less(s.first) {
				if last.last.less(s.last) {
					last.last = s.last
				}
				continue
			}
		}
		out6 = append(out6, s)
	}
	rs.v6 = slices.Clip(out6)
}

// empty reports whether the set holds no address at all.
func (rs *rangeSet) empty() bool { return len(rs.v4) == 0 && len(rs.v6) == 0 }

// contains reports whether a, already unmapped, is in the set. It never allocates.
func (rs *rangeSet) contains(a netip.Addr) bool {
	if a.Is4() {
		x := addr4(a)
		s := rs.v4
		// Find the first range starting after x; the one before it is the only candidate.
		lo, hi := 0, len(s)
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if s[m].first <= x {
				lo = m + 1
			} else {
				hi = m
			}
		}
		return lo > 0 && x <= s[lo-1].last
	}
	if !a.Is6() {
		return false
	}
	x := addr6(a)
	s := rs.v6
	lo, hi := 0, len(s)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if !x.less(s[m].first) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo > 0 && !s[lo-1].last.less(x)
}
