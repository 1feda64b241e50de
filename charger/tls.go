package charger

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// MQTT over TLS (docs/operations.md, "MQTT over TLS"): the embedded broker
// serves a certificate that it re-reads when its files change, and clients
// (the paho link, the simulator) trust a given CA bundle or the system roots.

// ClientTLSConfig is the client side for ssl://, mqtts:// and tls:// URLs:
// it trusts the PEM CA bundle in caFile, or the system roots when caFile is
// empty. The server name is taken from the URL's host when dialling.
func ClientTLSConfig(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	pool, err := LoadCAPool(caFile)
	if err != nil {
		return nil, err
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// LoadCAPool reads a PEM bundle of CA certificates. A file without any
// certificate is an error (a key or a typo'd path would otherwise trust
// nothing and fail later, at every connection).
func LoadCAPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// IsCertificateError reports whether err is a refused certificate: the
// peer's chain is not signed by a trusted CA, names another host, or has
// expired. Such an error does not go away by retrying.
func IsCertificateError(err error) bool {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid)
}

// CertError says which of the two files is wrong: File is "cert" or "key".
type CertError struct {
	File string
	Path string
	Err  error
}

func (e *CertError) Error() string { return fmt.Sprintf("%s %s: %v", e.File, e.Path, e.Err) }
func (e *CertError) Unwrap() error { return e.Err }

// CertReloader serves a certificate and key kept in two PEM files, and
// loads them again when either file changes (modification time, size or
// inode, checked at every TLS handshake: two stat calls), so a rotated
// certificate is served to new connections without a restart; connections
// already open keep theirs. A pair that does not load (a key written before
// its certificate, a half-written file) is logged once per change and the
// previous pair goes on being served until a good pair is there. Safe for
// concurrent use.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex // guards everything below
	cert    *tls.Certificate
	loaded  [2]fileStamp // of the pair being served
	refused [2]fileStamp // of the last pair that failed to load (logged once)
}

type fileStamp struct {
	mtime time.Time
	size  int64
	ino   uint64
}

// NewCertReloader loads the pair at once; a missing, unreadable or
// mismatched pair is an error (a *CertError naming the file at fault).
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	r := &CertReloader{certFile: certFile, keyFile: keyFile, log: loggerOr(log).With("component", "mqtt-tls")}
	stamps, err := r.stamps()
	if err != nil {
		return nil, err
	}
	cert, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r.cert, r.loaded = cert, stamps
	return r, nil
}

// ServerConfig is a server configuration serving the reloaded certificate.
func (r *CertReloader) ServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
}

// GetCertificate is tls.Config.GetCertificate: the current pair, loaded
// again first when a file changed.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	stamps, err := r.stamps()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil || stamps == r.loaded || stamps == r.refused {
		return r.cert, nil // a file missing for a moment (being replaced): keep serving
	}
	cert, err := loadPair(r.certFile, r.keyFile)
	if err != nil {
		r.refused = stamps
		r.log.Error("new TLS certificate not loaded; still serving the previous one", "err", err)
		return r.cert, nil
	}
	r.cert, r.loaded = cert, stamps
	r.log.Info("TLS certificate reloaded", "cert", r.certFile, "not_after", cert.Leaf.NotAfter)
	return cert, nil
}

// Certificate is the pair being served (for tests and start-up logs).
func (r *CertReloader) Certificate() *tls.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert
}

func (r *CertReloader) stamps() ([2]fileStamp, error) {
	var out [2]fileStamp
	for i, f := range [2]struct{ kind, path string }{{"cert", r.certFile}, {"key", r.keyFile}} {
		fi, err := os.Stat(f.path)
		if err != nil {
			return out, &CertError{File: f.kind, Path: f.path, Err: err}
		}
		out[i] = fileStamp{mtime: fi.ModTime(), size: fi.Size(), ino: inode(fi)}
	}
	return out, nil
}

// loadPair reads and checks the pair, saying which file is at fault.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, &CertError{File: "cert", Path: certFile, Err: err}
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, &CertError{File: "key", Path: keyFile, Err: err}
	}
	// Which file is wrong: the certificate must parse on its own.
	if !hasCertificate(certPEM) {
		return nil, &CertError{File: "cert", Path: certFile, Err: errors.New("no PEM certificate in it")}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &CertError{File: "key", Path: keyFile, Err: fmt.Errorf("does not load with the certificate %s: %w", certFile, err)}
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, &CertError{File: "cert", Path: certFile, Err: err}
		}
	}
	if time.Now().After(cert.Leaf.NotAfter) {
		return nil, &CertError{File: "cert", Path: certFile, Err: fmt.Errorf("expired on %s", cert.Leaf.NotAfter.Format(time.RFC3339))}
	}
	return &cert, nil
}

func hasCertificate(pemBytes []byte) bool {
	return x509.NewCertPool().AppendCertsFromPEM(pemBytes)
}
