package payscore

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Signer produces Huifu signatures: SHA256WithRSA (RSASSA-PKCS1-v1_5 over
// SHA-256) of message, as standard padded base64 (docs/payscore.md §2).
// Implementations must be safe for concurrent use.
type Signer interface {
	Sign(message []byte) (signature string, err error)
}

// Verifier checks a Huifu signature over message. It returns nil only for a
// valid signature; otherwise an error wrapping ErrNoValidSignature.
// Implementations must be safe for concurrent use.
type Verifier interface {
	Verify(message []byte, signature string) error
}

// RSASigner is the Signer for a merchant (or, in the sandbox, Huifu) RSA key.
type RSASigner struct{ key *rsa.PrivateKey }

// NewRSASigner returns a Signer for key.
func NewRSASigner(key *rsa.PrivateKey) *RSASigner { return &RSASigner{key: key} }

// Sign implements Signer.
func (s *RSASigner) Sign(message []byte) (string, error) {
	sum := sha256.Sum256(message)
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("rsa sign: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// RSAVerifier is the Verifier for an RSA public key.
type RSAVerifier struct{ key *rsa.PublicKey }

// NewRSAVerifier returns a Verifier for key.
func NewRSAVerifier(key *rsa.PublicKey) *RSAVerifier { return &RSAVerifier{key: key} }

// Verify implements Verifier. A space in the signature is read as '+': a
// form sender that forgot to percent-encode '+' would otherwise make every
// such signature fail, and base64 never contains spaces anyway.
func (v *RSAVerifier) Verify(message []byte, signature string) error {
	if signature == "" {
		return ErrNotSigned
	}
	sig, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(signature, " ", "+"))
	if err != nil {
		return fmt.Errorf("%w: signature is not base64", ErrNoValidSignature)
	}
	sum := sha256.Sum256(message)
	if err := rsa.VerifyPKCS1v15(v.key, crypto.SHA256, sum[:], sig); err != nil {
		return ErrNoValidSignature
	}
	return nil
}

// LoadPrivateKey parses the merchant's RSA private key given as PEM or as bare
// base64 DER (the form Huifu's console hands out). PKCS#8 is the profile's
// format; PKCS#1 is accepted too. Errors never contain key material.
func LoadPrivateKey(s string) (*rsa.PrivateKey, error) {
	der, err := keyDER(s)
	if err != nil {
		return nil, fmt.Errorf("load private key: %w", err)
	}
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, errors.New("load private key: not an RSA key")
		}
		return rk, nil
	}
	if rk, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return rk, nil
	}
	return nil, errors.New("load private key: neither PKCS#8 nor PKCS#1 DER")
}

// LoadPublicKey parses Huifu's RSA public key given as PEM or as bare base64
// DER. X.509 SubjectPublicKeyInfo is the profile's format; PKCS#1 is accepted.
func LoadPublicKey(s string) (*rsa.PublicKey, error) {
	der, err := keyDER(s)
	if err != nil {
		return nil, fmt.Errorf("load public key: %w", err)
	}
	if k, err := x509.ParsePKIXPublicKey(der); err == nil {
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, errors.New("load public key: not an RSA key")
		}
		return rk, nil
	}
	if rk, err := x509.ParsePKCS1PublicKey(der); err == nil {
		return rk, nil
	}
	return nil, errors.New("load public key: neither PKIX nor PKCS#1 DER")
}

// keyDER returns the DER bytes of a PEM block or of bare base64 (whitespace
// and line breaks inside the base64 are ignored: keys get pasted wrapped).
func keyDER(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty key")
	}
	if strings.Contains(s, "-----BEGIN") {
		block, _ := pem.Decode([]byte(s))
		if block == nil {
			return nil, errors.New("malformed PEM")
		}
		return block.Bytes, nil
	}
	clean := strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\n', '\r', '\t':
			return -1
		}
		return r
	}, s)
	der, err := base64.StdEncoding.DecodeString(clean)
	if err != nil {
		if der, err2 := base64.RawStdEncoding.DecodeString(clean); err2 == nil {
			return der, nil
		}
		return nil, errors.New("key is neither PEM nor base64")
	}
	return der, nil
}

// EncodePrivateKey returns key as bare base64 PKCS#8 DER, the form
// LoadPrivateKey accepts and Huifu's console hands out.
func EncodePrivateKey(key *rsa.PrivateKey) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("encode private key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

// EncodePublicKey returns key as bare base64 PKIX DER.
func EncodePublicKey(key *rsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return "", fmt.Errorf("encode public key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

// CanonicalJSON is the byte form Huifu signs (docs/payscore.md §2): compact JSON,
// object keys sorted by byte order (encoding/json sorts map keys), non-ASCII
// as raw UTF-8, and '/', '<', '>', '&' NOT escaped. Quotes, backslashes and
// control characters keep their normal JSON escapes.
//
// Known divergence: encoding/json always writes U+2028/U+2029 as \u2028 and
// \u2029; chargeflow never sends them, and a reply containing them still
// verifies over its raw bytes.
func CanonicalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("canonical json: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Canonicalize re-serialises an arbitrary JSON object into CanonicalJSON
// form, whatever its key order, spacing or escapes: that is how Huifu checks
// a request, so SDK styles that keep "" values and those that drop them both
// verify. Numbers keep their literal text.
func Canonicalize(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("canonicalize: %w", err)
	}
	if obj == nil {
		return nil, errors.New("canonicalize: not a JSON object")
	}
	if dec.More() {
		return nil, errors.New("canonicalize: trailing data")
	}
	return CanonicalJSON(obj)
}
