package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chargeflow/chargeflow/charger"
	"github.com/chargeflow/chargeflow/charger/sim"
	"github.com/chargeflow/chargeflow/internal/testenv"
)

// TestTLSSession runs a session to paid with the charger on MQTT over TLS:
// on the embedded broker's TLS listener (with the charger's password), and
// with chargeflow and the charger both on Mosquitto's TLS listener (chargeflow
// trusting CHARGEFLOW_MQTT_CA_FILE). A charger trusting another CA, or only
// the system roots, fails with a certificate error, stays offline, and a
// session on it is refused: no start command ever reaches it.
func TestTLSSession(t *testing.T) {
	for _, backend := range []string{"embedded", "mosquitto"} {
		t.Run(backend, func(t *testing.T) {
			ca := testenv.NewCA(t, "chargeflow e2e CA")
			sc := ca.IssueServer(t, "", "broker")
			var s *stack
			var tlsURL string
			switch backend {
			case "embedded":
				s = newStackWith(t, "embedded", 0, "",
					"CHARGEFLOW_MQTT_TLS_LISTEN", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
					"CHARGEFLOW_MQTT_TLS_CERT", sc.CertFile, "CHARGEFLOW_MQTT_TLS_KEY", sc.KeyFile)
				for _, f := range strings.Fields(s.out.String()) {
					if v, ok := strings.CutPrefix(f, "mqtts="); ok {
						tlsURL = v
					}
				}
				if !strings.HasPrefix(tlsURL, "ssl://127.0.0.1:") {
					t.Fatalf("no mqtts= URL in the ready line: %s", s.out.String())
				}
			case "mosquitto":
				p := testenv.MosquittoTLSProcess(t, sc, "")
				tlsURL = p.TLSURL
				s = newStackWith(t, "external", 0, "", "CHARGEFLOW_MQTT_URL", tlsURL, "CHARGEFLOW_MQTT_CA_FILE", ca.CertFile)
				// chargeflow trusting another CA does not start, and says what to check.
				env := map[string]string{}
				for k, v := range s.env {
					env[k] = v
				}
				env["CHARGEFLOW_MQTT_CA_FILE"] = testenv.NewCA(t, "not the broker's").CertFile
				env["CHARGEFLOW_HTTP_ADDR"] = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
				env["CHARGEFLOW_INSTANCE_ID"] = "tls-wrong-ca"
				err := run(context.Background(), []string{"serve"}, envOf(env), &bytes.Buffer{}, &bytes.Buffer{})
				if err == nil || !charger.IsCertificateError(err) || !strings.Contains(err.Error(), "CHARGEFLOW_MQTT_CA_FILE must hold the CA") {
					t.Fatalf("serve trusting the wrong CA: %v", err)
				}
			}
			s.mustDo("PUT", "/v1/chargers/CP-1", opsToken, map[string]any{"connectors": []int{1}, "tariff_id": "default", "password": simPW}, 200)
			s.mustDo("PUT", "/v1/chargers/CP-BAD", opsToken, map[string]any{"connectors": []int{1}, "tariff_id": "default", "password": simPW}, 200)

			fleetOn := func(id string, tc *tls.Config) (*sim.Fleet, error) {
				f, err := sim.New(sim.Config{BrokerURL: tlsURL, Prefix: s.prefix, TLSConfig: tc,
					Chargers:      []sim.ChargerSpec{{ID: id, Password: simPW, Connectors: []int{1}}},
					MeterInterval: 100 * time.Millisecond, PowerW: 360_000, TxnResend: 200 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { f.Close() })
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				return f, f.Start(ctx)
			}
			good, err := fleetOn("CP-1", ca.ClientTLS())
			if err != nil {
				t.Fatalf("charger over TLS: %v", err)
			}
			s.fleet = good
			s.waitCharger("CP-1", true)
			v := s.charge("CP-1", 5000)
			s.mustDo("POST", "/v1/sessions/"+v.ID+"/stop", appToken, nil, 202)
			checkPaid(t, s, s.waitState(v.ID, "paid"))

			for _, bad := range []struct {
				name string
				tc   *tls.Config // nil: the system roots
			}{{"another CA", testenv.NewCA(t, "not ours").ClientTLS()}, {"system roots", nil}} {
				f, err := fleetOn("CP-BAD", bad.tc)
				if err == nil || !charger.IsCertificateError(err) || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
					t.Fatalf("%s: charger power on = %v, want a certificate error", bad.name, err)
				}
				code, body := s.do("POST", "/v1/sessions", appToken, map[string]any{"charger_id": "CP-BAD", "connector": 1, "openid": "o-bad",
					"max_amount_fen": 500}, "Idempotency-Key", "bad-"+bad.name)
				if code != 409 || !strings.Contains(string(body), "offline") {
					t.Fatalf("%s: session on a charger that could not connect: %d %s", bad.name, code, body)
				}
				if n := len(f.Charger("CP-BAD").Commands()); n != 0 {
					t.Fatalf("%s: the charger got %d commands", bad.name, n)
				}
				f.Close()
			}
		})
	}
}

// TestTLSConfigErrors: a TLS listener without its pair, a pair that does
// not load, a listener beside an external broker, a CA file without
// certificates: start-up stops with a message naming the variable.
func TestTLSConfigErrors(t *testing.T) {
	ca := testenv.NewCA(t, "config CA")
	a, b := ca.IssueServer(t, "", "a"), ca.IssueServer(t, "", "b")
	junk := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junk, []byte("junk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string // each must be named
		not  string   // and this must not
	}{
		{"listener without pair", map[string]string{"CHARGEFLOW_MQTT_TLS_LISTEN": ":8883"},
			[]string{"CHARGEFLOW_MQTT_TLS_CERT: is required", "CHARGEFLOW_MQTT_TLS_KEY: is required"}, ""},
		{"missing cert file", map[string]string{"CHARGEFLOW_MQTT_TLS_LISTEN": ":8883", "CHARGEFLOW_MQTT_TLS_CERT": a.CertFile + ".gone", "CHARGEFLOW_MQTT_TLS_KEY": a.KeyFile},
			[]string{"CHARGEFLOW_MQTT_TLS_CERT: cert " + a.CertFile + ".gone"}, "CHARGEFLOW_MQTT_TLS_KEY"},
		{"garbled cert", map[string]string{"CHARGEFLOW_MQTT_TLS_LISTEN": ":8883", "CHARGEFLOW_MQTT_TLS_CERT": junk, "CHARGEFLOW_MQTT_TLS_KEY": a.KeyFile},
			[]string{"CHARGEFLOW_MQTT_TLS_CERT: cert " + junk + ": no PEM certificate"}, "CHARGEFLOW_MQTT_TLS_KEY"},
		{"mismatched key", map[string]string{"CHARGEFLOW_MQTT_TLS_LISTEN": ":8883", "CHARGEFLOW_MQTT_TLS_CERT": a.CertFile, "CHARGEFLOW_MQTT_TLS_KEY": b.KeyFile},
			[]string{"CHARGEFLOW_MQTT_TLS_KEY: key " + b.KeyFile + ": does not load with the certificate"}, "CHARGEFLOW_MQTT_TLS_CERT"},
		{"pair without listener", map[string]string{"CHARGEFLOW_MQTT_TLS_CERT": a.CertFile, "CHARGEFLOW_MQTT_TLS_KEY": a.KeyFile},
			[]string{"CHARGEFLOW_MQTT_TLS_LISTEN: is required"}, ""},
		{"listener beside an external broker", map[string]string{"CHARGEFLOW_MQTT_URL": "ssl://broker:8883", "CHARGEFLOW_MQTT_TLS_LISTEN": ":8883",
			"CHARGEFLOW_MQTT_TLS_CERT": a.CertFile, "CHARGEFLOW_MQTT_TLS_KEY": a.KeyFile},
			[]string{"CHARGEFLOW_MQTT_TLS_LISTEN: is the embedded broker's"}, ""},
		{"CA file without certificates", map[string]string{"CHARGEFLOW_MQTT_URL": "ssl://broker:8883", "CHARGEFLOW_MQTT_CA_FILE": a.KeyFile},
			[]string{"CHARGEFLOW_MQTT_CA_FILE: " + a.KeyFile + " holds no PEM certificate"}, ""},
		{"CA file missing", map[string]string{"CHARGEFLOW_MQTT_CA_FILE": junk + ".gone"},
			[]string{"CHARGEFLOW_MQTT_CA_FILE: read CA bundle"}, ""},
	} {
		env := prodEnv()
		for k, v := range tc.env {
			env[k] = v
		}
		_, err := loadConfig(nil, envOf(env), &bytes.Buffer{})
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v\nwant %q", tc.name, err, w)
			}
		}
		if tc.not != "" && strings.Contains(err.Error(), tc.not) {
			t.Errorf("%s: %v\nnames %s too", tc.name, err, tc.not)
		}
	}
	// A good pair and CA file pass.
	env := prodEnv()
	env["CHARGEFLOW_MQTT_TLS_LISTEN"], env["CHARGEFLOW_MQTT_TLS_CERT"], env["CHARGEFLOW_MQTT_TLS_KEY"] = ":8883", a.CertFile, a.KeyFile
	env["CHARGEFLOW_MQTT_CA_FILE"] = ca.CertFile
	if _, err := loadConfig(nil, envOf(env), &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
}
