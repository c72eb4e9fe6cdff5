package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
)

// selfSigned makes a certificate for the given DNS names, signed by itself.
func selfSigned(t *testing.T, names ...string) (certPEM, keyPEM string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})), cert
}

func TestTLSListenerChoosesCertificateBySNI(t *testing.T) { tlsBySNI(t, nil) }

// The same with the data plane in workers, which build their certificate tables from
// the state the node sends them.
func TestTLSListenerChoosesCertificateBySNIInWorkers(t *testing.T) { tlsBySNI(t, withWorkers(2)) }

func tlsBySNI(t *testing.T, edit func(*Config)) {
	n := startNode(t, "tls1", func(c *Config) {
		c.TLSListen = "127.0.0.1:0"
		if edit != nil {
			edit(c)
		}
	})

	secureCert, secureKey, secureX := selfSigned(t, "secure.example.com")
	wildCert, wildKey, wildX := selfSigned(t, "*.wild.example.com")
	b := &fsm.Bundle{
		Groups: []fsm.GroupSpec{{Name: "shop", Domains: []string{"secure.example.com", "api.wild.example.com"}, APIs: []fsm.APISpec{{
			Name:   "ping",
			APIDef: fsm.APIDef{Method: "GET", Path: "/ping", Auth: fsm.AuthAnonymous, Backend: fsm.Backend{Type: fsm.BackendMock, Status: 200, Body: "pong"}},
			Deploy: []fsm.Stage{fsm.StageRelease},
		}}}},
		Certificates: []fsm.Certificate{
			{Name: "secure", Cert: secureCert, Key: secureKey, Domains: []string{"secure.example.com"}},
			{Name: "wild", Cert: wildCert, Key: wildKey, Domains: []string{"*.wild.example.com"}},
		},
	}
	c := NewClient(n.AdminAddr(), n.Token())
	if _, err := c.Apply(context.Background(), b, false); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		sni  string
		want *x509.Certificate
	}{{"secure.example.com", secureX}, {"api.wild.example.com", wildX}} {
		pool := x509.NewCertPool()
		pool.AddCert(tc.want)
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{ServerName: tc.sni, RootCAs: pool},
		}}
		req, _ := http.NewRequest("GET", "https://"+n.TLSAddr()+"/ping", nil)
		req.Host = tc.sni
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.sni, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "pong" {
			t.Fatalf("%s: %d %q", tc.sni, resp.StatusCode, body)
		}
		if got := resp.TLS.PeerCertificates[0]; !got.Equal(tc.want) {
			t.Fatalf("%s: served the certificate for %v", tc.sni, got.DNSNames)
		}
	}

	// An unknown name gets no certificate: the handshake fails.
	conn, err := tls.Dial("tcp", n.TLSAddr(), &tls.Config{ServerName: "other.example.com", InsecureSkipVerify: true})
	if err == nil {
		conn.Close()
		t.Fatal("handshake for an unknown name succeeded")
	}

	// Private keys never come back through the admin API.
	s, err := c.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for name, cert := range s.Certificates {
		if cert.Key != "" || strings.Contains(cert.Cert, "PRIVATE") {
			t.Fatalf("certificate %s returned its private key", name)
		}
	}
}
