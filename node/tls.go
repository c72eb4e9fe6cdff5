package node

import (
	"crypto/tls"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/tollgate/tollgate/fsm"
)

// certStore serves the data plane's TLS certificates, chosen by SNI from those in the
// replicated state. It is rebuilt after every state change and swapped atomically, so a
// handshake never takes a lock.
type certStore struct {
	table atomic.Pointer[certTable]
}

type certTable struct {
	exact    map[string]*tls.Certificate // host → certificate
	wildcard map[string]*tls.Certificate // "example.com" for *.example.com
	// index is the state index the table was built from, so an unchanged set of
	// certificates is not parsed again.
	certs map[string]fsm.Certificate
}

// update rebuilds the table from the state's certificates. A certificate that does not
// parse (validation refuses those, so this means a newer binary wrote it) is skipped
// and reported.
func (c *certStore) update(s *fsm.State) error {
	if old := c.table.Load(); old != nil && sameCerts(old.certs, s.Certificates) {
		return nil
	}
	t := &certTable{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}, certs: s.Certificates}
	var errs []string
	for _, name := range fsm.SortedKeys(s.Certificates) {
		cert := s.Certificates[name]
		pair, err := tls.X509KeyPair([]byte(cert.Cert), []byte(cert.Key))
		if err != nil {
			errs = append(errs, fmt.Sprintf("certificate %s: %v", name, err))
			continue
		}
		for _, d := range cert.Domains {
			d = strings.ToLower(strings.TrimSuffix(d, "."))
			if rest, ok := strings.CutPrefix(d, "*."); ok {
				t.wildcard[rest] = &pair
			} else {
				t.exact[d] = &pair
			}
		}
	}
	c.table.Store(t)
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func sameCerts(a, b map[string]fsm.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || v.Cert != w.Cert || v.Key != w.Key || strings.Join(v.Domains, ",") != strings.Join(w.Domains, ",") {
			return false
		}
	}
	return true
}

// getCertificate picks the certificate for the client's SNI name: an exact domain
// first, then a wildcard one level up.
func (c *certStore) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	t := c.table.Load()
	if t == nil {
		return nil, fmt.Errorf("no certificates configured")
	}
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if cert, ok := t.exact[name]; ok {
		return cert, nil
	}
	if _, parent, ok := strings.Cut(name, "."); ok {
		if cert, ok := t.wildcard[parent]; ok {
			return cert, nil
		}
	}
	return nil, fmt.Errorf("no certificate for %q", hello.ServerName)
}

// redactState returns s without private keys, for the admin API: certificates' keys
// are held by the cluster and never returned.
func redactState(s *fsm.State) *fsm.State {
	if len(s.Certificates) == 0 {
		return s
	}
	c := *s
	c.Certificates = make(map[string]fsm.Certificate, len(s.Certificates))
	for k, v := range s.Certificates {
		v.Key = ""
		c.Certificates[k] = v
	}
	return &c
}
