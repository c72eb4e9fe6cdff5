package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// StreamLayer is raft's network layer: TCP, optionally mutual TLS, with an outbound drop
// filter that tests use to cut links. It satisfies raft.StreamLayer. Its methods are
// safe for concurrent use.
//
// With TLS every raft connection is mutually authenticated: each side presents a
// certificate signed by the cluster CA and refuses a peer that does not. Hostnames are
// not checked — holding a certificate from the cluster CA is what makes a node a member
// (as Consul does with verify_server_hostname off) — so node certificates need no SANs.
type StreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	tls       *tls.Config // nil: plain TCP
	drop      dropFilter
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// ErrLinkCut is what a dial or a read or write on a connection returns while a drop
// filter cuts the link to its peer.
var ErrLinkCut = errors.New("raft: link cut by drop filter")

// NewStreamLayer listens on bind (host:port) and advertises advertise (nil: the bound
// address, which must then be a real host). tlsCfg, from LoadTLS, turns on mutual TLS.
func NewStreamLayer(bind string, advertise net.Addr, tlsCfg *tls.Config) (*StreamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	if a, ok := advertise.(*net.TCPAddr); !ok || a.IP == nil || a.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft: %s is not an address other nodes can dial", advertise)
	}
	s := &StreamLayer{ln: ln, advertise: advertise, tls: tlsCfg}
	if tlsCfg != nil {
		s.ln = tls.NewListener(ln, tlsCfg)
	}
	return s, nil
}

// Accept waits for the next inbound connection. With TLS the handshake runs on the
// connection's first read, under raft's own deadlines, so a bad peer never blocks Accept.
func (s *StreamLayer) Accept() (net.Conn, error) { return s.ln.Accept() }

// Close stops listening.
func (s *StreamLayer) Close() error { return s.ln.Close() }

// Addr is the advertised address.
func (s *StreamLayer) Addr() net.Addr { return s.advertise }

// Dial connects to a peer's raft address, with the TLS handshake done when TLS is on.
func (s *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	addr := string(address)
	if s.drop.cuts(addr) {
		return nil, ErrLinkCut
	}
	d := &net.Dialer{Timeout: timeout}
	var c net.Conn
	var err error
	if s.tls != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, s.tls)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	return &filteredConn{Conn: c, s: s, addr: addr}, nil
}

// Probe checks that a peer speaks this layer's protocol: with TLS it completes a mutual
// handshake (so a node without the cluster's certificates fails), without it a TCP
// connect. It blocks up to timeout.
func (s *StreamLayer) Probe(addr string, timeout time.Duration) error {
	c, err := s.Dial(raft.ServerAddress(addr), timeout)
	if err != nil {
		return err
	}
	return c.Close()
}

// SetDropFilter is a test hook that cuts links: while set, dials to an address for
// which drop returns true fail, and reads and writes on open connections to it fail
// (closing them), so raft sees the peer as unreachable. Set it on both sides for a
// clean partition; nil heals.
func (s *StreamLayer) SetDropFilter(drop func(addr string) bool) { s.drop.set(drop) }

// dropFilter is a test hook's link filter: nil lets everything through. Safe for
// concurrent use.
type dropFilter struct {
	f atomic.Pointer[func(addr string) bool]
}

func (d *dropFilter) set(f func(addr string) bool) {
	if f == nil {
		d.f.Store(nil)
		return
	}
	d.f.Store(&f)
}

// cuts reports whether the filter cuts the link to addr.
func (d *dropFilter) cuts(addr string) bool {
	f := d.f.Load()
	return f != nil && (*f)(addr)
}

// filteredConn is an outbound connection that fails once its peer is cut off.
type filteredConn struct {
	net.Conn
	s    *StreamLayer
	addr string
}

func (c *filteredConn) Read(b []byte) (int, error) {
	if c.s.drop.cuts(c.addr) {
		c.Conn.Close()
		return 0, ErrLinkCut
	}
	return c.Conn.Read(b)
}

func (c *filteredConn) Write(b []byte) (int, error) {
	if c.s.drop.cuts(c.addr) {
		c.Conn.Close()
		return 0, ErrLinkCut
	}
	return c.Conn.Write(b)
}

// LoadTLS builds the mutual-TLS configuration of raft from PEM files: the cluster CA
// that signs every node's certificate, and this node's certificate and key. The same
// configuration serves both sides: it presents the node's certificate and requires and
// verifies the peer's against the CA.
func LoadTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" || certFile == "" || keyFile == "" {
		return nil, errors.New("raft TLS: the CA, certificate and key files are all required")
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("raft TLS: CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("raft TLS: %s holds no PEM certificate", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("raft TLS: certificate and key: %w", err)
	}
	return MutualTLS(pool, cert), nil
}

// MutualTLS returns the raft TLS configuration for a node holding cert, trusting the CAs
// in pool. Peers are verified against pool, without a hostname check (see StreamLayer).
func MutualTLS(pool *x509.CertPool, cert tls.Certificate) *tls.Config {
	verify := func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		if len(rawCerts) == 0 {
			return errors.New("raft TLS: the peer sent no certificate")
		}
		certs := make([]*x509.Certificate, len(rawCerts))
		for i, raw := range rawCerts {
			c, err := x509.ParseCertificate(raw)
			if err != nil {
				return fmt.Errorf("raft TLS: peer certificate: %w", err)
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			return fmt.Errorf("raft TLS: peer certificate is not from the cluster CA: %w", err)
		}
		return nil
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// Verification is ours (VerifyPeerCertificate, chain only) on both sides.
		ClientAuth:            tls.RequireAnyClientCert,
		InsecureSkipVerify:    true, //nolint:gosec // the chain is verified in VerifyPeerCertificate
		VerifyPeerCertificate: verify,
	}
}
