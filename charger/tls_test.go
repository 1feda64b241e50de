package charger_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/charger/sim"
	"github.com/chargeflow/chargeflow/internal/testenv"
)

// tlsBroker starts an embedded broker with a plain and a TLS listener, the
// TLS one serving sc (reloaded on change).
func tlsBroker(t *testing.T, sc testenv.ServerCert, c *creds, log *slog.Logger) (*charger.EmbeddedBroker, *recorder) {
	t.Helper()
	rl, err := charger.NewCertReloader(sc.CertFile, sc.KeyFile, log)
	if err != nil {
		t.Fatal(err)
	}
	b, err := charger.NewEmbeddedBroker(charger.EmbeddedConfig{ListenAddr: "127.0.0.1:0", TLSListenAddr: "127.0.0.1:0",
		TLSConfig: rl.ServerConfig(), Credentials: c, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	startLink(t, b, rec.handle)
	return b, rec
}

// tlsFleet powers on one simulated charger over url with tc (nil: system
// roots) and returns it with Start's error.
func tlsFleet(t *testing.T, url, prefix, id, pw string, tc *tls.Config) (*sim.Fleet, error) {
	t.Helper()
	f, err := sim.New(sim.Config{BrokerURL: url, Prefix: prefix, TLSConfig: tc,
		Chargers: []sim.ChargerSpec{{ID: id, Password: pw, Connectors: []int{1}}}, MeterInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return f, f.Start(ctx)
}

func onlineSeen(rec *recorder, cp string) bool {
	for _, m := range rec.decoded(cp, charger.KindState) {
		if m.(charger.StateMsg).Online {
			return true
		}
	}
	return false
}

// TestTLSEmbeddedBroker: chargers with a password reach the embedded broker
// over TLS and run a command; a charger trusting another CA, or only the
// system roots, fails at once with a certificate error and never reaches
// the handler; a wrong password is refused over TLS as over TCP.
func TestTLSEmbeddedBroker(t *testing.T) {
	ca := testenv.NewCA(t, "chargeflow test CA")
	var logBuf syncBuf
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	c := &creds{}
	b, rec := tlsBroker(t, ca.IssueServer(t, "", "broker"), c, log)
	if !strings.HasPrefix(b.TLSURL(), "ssl://127.0.0.1:") || b.TLSURL() == strings.Replace(b.URL(), "tcp", "ssl", 1) {
		t.Fatalf("TLSURL %q beside URL %q", b.TLSURL(), b.URL())
	}
	c.add(t, "CP-T", "pw-CP-T")

	f, err := tlsFleet(t, b.TLSURL(), charger.DefaultPrefix, "CP-T", "pw-CP-T", ca.ClientTLS())
	if err != nil {
		t.Fatalf("charger over TLS: %v", err)
	}
	eventually(t, "CP-T online over TLS", func() bool { return onlineSeen(rec, "CP-T") })
	if err := f.Charger("CP-T").Plug(1); err != nil {
		t.Fatal(err)
	}
	if err := b.SendCommand(context.Background(), "CP-T", startCmd("tls-1", "s-tls", 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "start accepted and meter over TLS", func() bool {
		return len(rec.decoded("CP-T", charger.KindAck)) == 1 && len(rec.decoded("CP-T", charger.KindMeter)) >= 2
	})

	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"another CA", testenv.NewCA(t, "someone else's CA").ClientTLS()},
		{"system roots only", nil},
	} {
		id := "CP-X" + fmt.Sprint(len(tc.name))
		c.add(t, id, "pw")
		_, err := tlsFleet(t, b.TLSURL(), charger.DefaultPrefix, id, "pw", tc.cfg)
		if err == nil || !charger.IsCertificateError(err) || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Fatalf("%s: power on = %v, want a certificate error", tc.name, err)
		}
		if onlineSeen(rec, id) || rec.decoded(id, charger.KindState) != nil {
			t.Fatalf("%s: the handler heard from a charger whose TLS failed", tc.name)
		}
	}
	eventually(t, "the broker logs the refused handshakes", func() bool {
		return strings.Contains(logBuf.String(), "mqtt tls handshake failed")
	})
	if !strings.Contains(logBuf.String(), "remote error: tls: bad certificate") {
		t.Fatalf("the broker's log does not say why:\n%s", logBuf.String())
	}

	// The per-charger password is checked over TLS too.
	o := paho.NewClientOptions().AddBroker(b.TLSURL()).SetClientID("CP-T2").SetUsername("CP-T2").SetPassword("wrong").
		SetTLSConfig(ca.ClientTLS()).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c.add(t, "CP-T2", "right")
	tok := paho.NewClient(o).Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() == nil {
		t.Fatalf("wrong password over TLS: connect = %v, want refused", tok.Error())
	}
	o.SetPassword("right")
	cl := paho.NewClient(o)
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("right password over TLS: %v", tok.Error())
	}
	cl.Disconnect(0)
}

// TestTLSCertificateRotation: replacing the certificate files is picked up
// by the next handshake, without a restart; connections already open stay;
// a broken new pair is logged and the previous certificate goes on.
func TestTLSCertificateRotation(t *testing.T) {
	oldCA, newCA := testenv.NewCA(t, "old CA"), testenv.NewCA(t, "new CA")
	dir := t.TempDir()
	var logBuf syncBuf
	c := &creds{}
	c.add(t, "CP-R", "pw")
	b, rec := tlsBroker(t, oldCA.IssueServer(t, dir, "broker"), c, slog.New(slog.NewTextHandler(&logBuf, nil)))
	handshake := func(ca *testenv.CA) error {
		conn, err := tls.Dial("tcp", b.TLSAddr(), ca.ClientTLS())
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := handshake(oldCA); err != nil {
		t.Fatal(err)
	}
	f, err := tlsFleet(t, b.TLSURL(), charger.DefaultPrefix, "CP-R", "pw", oldCA.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}

	newCA.IssueServer(t, dir, "broker") // same file names, replaced by rename
	if err := handshake(newCA); err != nil {
		t.Fatalf("after rotation, a client trusting the new CA: %v", err)
	}
	if err := handshake(oldCA); err == nil || !charger.IsCertificateError(err) {
		t.Fatalf("after rotation, a client trusting only the old CA: %v, want a certificate error", err)
	}
	if !strings.Contains(logBuf.String(), "TLS certificate reloaded") {
		t.Fatalf("no reload logged:\n%s", logBuf.String())
	}
	// The charger connected before the rotation is still there.
	if err := f.Charger("CP-R").Plug(1); err != nil {
		t.Fatal(err)
	}
	if err := b.SendCommand(context.Background(), "CP-R", startCmd("rot-1", "s-rot", 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the old connection still works", func() bool { return len(rec.decoded("CP-R", charger.KindAck)) == 1 })

	// A key that does not match: logged, and the new CA's certificate stays.
	other := newCA.IssueServer(t, "", "other")
	key, err := os.ReadFile(other.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/broker-key.pem", key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := handshake(newCA); err != nil {
		t.Fatalf("with a mismatched new key, the previous certificate should still be served: %v", err)
	}
	if !strings.Contains(logBuf.String(), "new TLS certificate not loaded") {
		t.Fatalf("the mismatched key was not logged:\n%s", logBuf.String())
	}
}

// TestTLSMosquittoPahoLink: the paho link and a charger reach Mosquitto's
// TLS listener trusting the CA file; a link trusting another CA fails to
// start with a certificate error.
func TestTLSMosquittoPahoLink(t *testing.T) {
	ca := testenv.NewCA(t, "mosquitto test CA")
	p := testenv.MosquittoTLSProcess(t, ca.IssueServer(t, "", "mosquitto"), "max_inflight_messages 0")
	prefix := testenv.Namespace(t) + "/ev/v1"
	newLink := func(caFile string) *charger.PahoLink {
		tc, err := charger.ClientTLSConfig(caFile)
		if err != nil {
			t.Fatal(err)
		}
		l, err := charger.NewPahoLink(charger.PahoConfig{URL: p.TLSURL, ClientID: "chargeflow-tls-" + prefix[:9], Prefix: prefix, TLSConfig: tc})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	bad := newLink(testenv.NewCA(t, "wrong CA").CertFile)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := bad.Start(ctx, (&recorder{}).handle); err == nil || !charger.IsCertificateError(err) {
		t.Fatalf("link trusting the wrong CA: Start = %v, want a certificate error", err)
	}
	_ = bad.Close()

	rec := &recorder{}
	l := newLink(ca.CertFile)
	startLink(t, l, rec.handle)
	f, err := tlsFleet(t, p.TLSURL, prefix, "CP-M", "", ca.ClientTLS())
	if err != nil {
		t.Fatalf("charger over TLS to Mosquitto: %v\n%s", err, p.Log())
	}
	if err := f.Charger("CP-M").Plug(1); err != nil {
		t.Fatal(err)
	}
	if err := l.SendCommand(ctx, "CP-M", startCmd("m-1", "s-m", 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ack and meter over Mosquitto's TLS listener", func() bool {
		return len(rec.decoded("CP-M", charger.KindAck)) == 1 && len(rec.decoded("CP-M", charger.KindMeter)) >= 2
	})
	if _, err := tlsFleet(t, p.TLSURL, prefix, "CP-W", "", testenv.NewCA(t, "wrong").ClientTLS()); err == nil || !charger.IsCertificateError(err) {
		t.Fatalf("charger trusting the wrong CA: %v, want a certificate error", err)
	}
}

// TestCertReloaderNamesTheFile: a missing, garbled or mismatched pair is an
// error naming the file at fault; a CA file without certificates too.
func TestCertReloaderNamesTheFile(t *testing.T) {
	ca := testenv.NewCA(t, "CA")
	a, other := ca.IssueServer(t, "", "a"), ca.IssueServer(t, "", "b")
	garbage := t.TempDir() + "/garbage.pem"
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, cert, key, file string
	}{
		{"missing cert", a.CertFile + ".nope", a.KeyFile, "cert"},
		{"missing key", a.CertFile, a.KeyFile + ".nope", "key"},
		{"garbled cert", garbage, a.KeyFile, "cert"},
		{"key of another certificate", a.CertFile, other.KeyFile, "key"},
		{"a key as the certificate", a.KeyFile, a.KeyFile, "cert"},
	} {
		_, err := charger.NewCertReloader(tc.cert, tc.key, nil)
		var ce *charger.CertError
		if !errors.As(err, &ce) || ce.File != tc.file {
			t.Errorf("%s: %v, want an error about the %s file", tc.name, err, tc.file)
		}
	}
	if _, err := charger.NewCertReloader(a.CertFile, a.KeyFile, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := charger.ClientTLSConfig(a.KeyFile); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("CA file holding a key: %v", err)
	}
	if cfg, err := charger.ClientTLSConfig(""); err != nil || cfg.RootCAs != nil {
		t.Fatalf("empty CA file: %v, roots %v (want the system roots)", err, cfg.RootCAs)
	}
}

// syncBuf is a log sink safe for concurrent writers.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
