package access

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/tollgate/tollgate/fsm"
)

// verKey is one compiled verification key: the single algorithm (or the algorithms)
// it may verify and the key in the type golang-jwt's method for them expects
// ([]byte, *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey). Binding a key to its
// algorithms at compile time is what rules out algorithm confusion: an RSA public key
// is never handed to HMAC, whatever the token's header says.
type verKey struct {
	kid  string
	algs []string
	key  any
}

// Algorithm families. A key names one algorithm (keys: alg) or, for a JWK without
// "alg", every algorithm of its type.
var (
	algsHS    = []string{"HS256", "HS384", "HS512"}
	algsRSA   = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	algsEdDSA = []string{"EdDSA"}
)

// ecAlg maps a curve to the one ES algorithm that uses it (RFC 7518, 3.4).
func ecAlg(c elliptic.Curve) string {
	switch c {
	case elliptic.P256():
		return "ES256"
	case elliptic.P384():
		return "ES384"
	case elliptic.P521():
		return "ES512"
	}
	return ""
}

// configKey compiles one entry of JWTSpec.Keys.
func configKey(k fsm.JWTKey) (verKey, error) {
	vk := verKey{kid: k.Kid, algs: []string{k.Alg}}
	switch {
	case strings.HasPrefix(k.Alg, "HS") && contains(algsHS, k.Alg):
		if k.Secret == "" {
			return vk, fmt.Errorf("%s needs a secret", k.Alg)
		}
		vk.key = []byte(k.Secret)
		return vk, nil
	case contains(algsRSA, k.Alg), strings.HasPrefix(k.Alg, "ES"), k.Alg == "EdDSA":
		pub, err := parsePEMPublicKey(k.PEM)
		if err != nil {
			return vk, fmt.Errorf("%s: %w", k.Alg, err)
		}
		if !keyFits(k.Alg, pub) {
			return vk, fmt.Errorf("%s: the pem holds a %s", k.Alg, keyKind(pub))
		}
		if r, ok := pub.(*rsa.PublicKey); ok {
			if err := checkRSA(r); err != nil {
				return vk, fmt.Errorf("%s: %w", k.Alg, err)
			}
		}
		vk.key = pub
		return vk, nil
	}
	return vk, fmt.Errorf("unsupported algorithm %q", k.Alg)
}

// minRSABits is the smallest modulus Go's crypto/rsa verifies with (by default since
// Go 1.24). A smaller key is refused here, when the config is compiled, rather than
// failing every token at request time.
const minRSABits = 1024

func checkRSA(pub *rsa.PublicKey) error {
	if n := pub.N.BitLen(); n < minRSABits {
		return fmt.Errorf("%d-bit RSA modulus, want at least %d", n, minRSABits)
	}
	return nil
}

// keyFits reports whether pub is the kind of key alg verifies with.
func keyFits(alg string, pub any) bool {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return contains(algsRSA, alg)
	case *ecdsa.PublicKey:
		return ecAlg(p.Curve) == alg
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

func keyKind(pub any) string {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return "RSA key"
	case *ecdsa.PublicKey:
		return "ECDSA key on " + p.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519 key"
	}
	return fmt.Sprintf("%T", pub)
}

// parsePEMPublicKey reads the first PEM block of text: a PUBLIC KEY (PKIX), an RSA
// PUBLIC KEY (PKCS #1) or a CERTIFICATE whose key is used; the forms fsm accepts.
func parsePEMPublicKey(text string) (any, error) {
	blk, _ := pem.Decode([]byte(text))
	if blk == nil {
		return nil, errors.New("pem: no PEM block")
	}
	switch blk.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(blk.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(blk.Bytes)
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		return c.PublicKey, nil
	}
	return nil, fmt.Errorf("pem: block %q, want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE", blk.Type)
}

// jwk is the part of a JSON Web Key (RFC 7517, 7518, 8037) verification needs.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
	K   string `json:"k"`
}

// parseJWKS compiles a JWK set. Keys marked for another use than "sig" (encryption
// keys published in the same set) and keys of a type or curve this gateway does not
// verify with are skipped, so an identity provider's full set can be pasted as is; a
// malformed key of a supported type is an error, since it is a mistake, not a feature.
// A set that leaves no usable key is an error.
func parseJWKS(doc string) ([]verKey, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal([]byte(doc), &set); err != nil {
		return nil, fmt.Errorf("jwks: %v", err)
	}
	var out []verKey
	for i, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		vk, ok, err := parseJWK(k)
		if err != nil {
			return nil, fmt.Errorf("jwks: keys[%d] (kid %q): %w", i, k.Kid, err)
		}
		if ok {
			out = append(out, vk)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("jwks: no signature verification key of a supported type (RSA, EC P-256/384/521, oct, OKP Ed25519)")
	}
	return out, nil
}

// parseJWK compiles one JWK; ok is false for a key type or curve it skips.
func parseJWK(k jwk) (vk verKey, ok bool, err error) {
	vk.kid = k.Kid
	var family []string
	switch k.Kty {
	case "RSA":
		n, err := b64(k.N, "n")
		if err != nil {
			return vk, false, err
		}
		e, err := b64(k.E, "e")
		if err != nil {
			return vk, false, err
		}
		if len(e) > 4 {
			return vk, false, errors.New("e: too large")
		}
		var ei int
		for _, c := range e {
			ei = ei<<8 | int(c)
		}
		if ei < 3 || ei%2 == 0 {
			return vk, false, errors.New("e: not an RSA public exponent")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: ei}
		if err := checkRSA(pub); err != nil {
			return vk, false, err
		}
		vk.key = pub
		family = algsRSA
	case "EC":
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return vk, false, nil
		}
		size := (curve.Params().BitSize + 7) / 8
		x, err := b64(k.X, "x")
		if err != nil {
			return vk, false, err
		}
		y, err := b64(k.Y, "y")
		if err != nil {
			return vk, false, err
		}
		if len(x) > size || len(y) > size {
			return vk, false, fmt.Errorf("x, y: longer than %d bytes for %s", size, k.Crv)
		}
		// RFC 7518 wants x and y at full length; pad leniently, as common libraries do.
		pt := make([]byte, 1+2*size)
		pt[0] = 4
		copy(pt[1+size-len(x):1+size], x)
		copy(pt[1+2*size-len(y):], y)
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, pt)
		if err != nil {
			return vk, false, fmt.Errorf("x, y: %v", err)
		}
		vk.key = pub
		family = []string{ecAlg(curve)}
	case "oct":
		secret, err := b64(k.K, "k")
		if err != nil {
			return vk, false, err
		}
		vk.key = secret
		family = algsHS
	case "OKP":
		if k.Crv != "Ed25519" {
			return vk, false, nil
		}
		x, err := b64(k.X, "x")
		if err != nil {
			return vk, false, err
		}
		if len(x) != ed25519.PublicKeySize {
			return vk, false, fmt.Errorf("x: %d bytes, want %d", len(x), ed25519.PublicKeySize)
		}
		vk.key = ed25519.PublicKey(x)
		family = algsEdDSA
	default:
		return vk, false, nil
	}
	if k.Alg == "" {
		vk.algs = family
		return vk, true, nil
	}
	if !contains(family, k.Alg) {
		return vk, false, fmt.Errorf("alg %q does not fit a %s key", k.Alg, k.Kty)
	}
	vk.algs = []string{k.Alg}
	return vk, true, nil
}

// b64 decodes a JWK member: base64url without padding, padding tolerated.
func b64(s, name string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("%s: required", name)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("%s: not base64url: %v", name, err)
	}
	return b, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
