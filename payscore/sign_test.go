package payscore_test

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/payscore/payscoretest"
)

func TestCanonicalJSON(t *testing.T) {
	got, err := payscore.CanonicalJSON(map[string]string{
		"z":          "last",
		"notify_url": "https://a.example/n?x=1&y=<2>",
		"intro":      "充电服务",
		"q":          "say \"hi\"\\\n",
		"A":          "upper sorts first",
		"empty":      "",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"A":"upper sorts first","empty":"","intro":"充电服务","notify_url":"https://a.example/n?x=1&y=<2>","q":"say \"hi\"\\\n","z":"last"}`
	if string(got) != want {
		t.Fatalf("canonical:\n got %s\nwant %s", got, want)
	}
	// Canonicalize turns any spelling of the same object into that form.
	messy := `{ "z" : "last", "q":"say \"hi\"\\\n", "notify_url":"https:\/\/a.example\/n?x=1\u0026y=\u003c2\u003e",` +
		` "intro":"\u5145\u7535\u670d\u52a1", "empty":"", "A":"upper sorts first" }`
	canon, err := payscore.Canonicalize([]byte(messy))
	if err != nil {
		t.Fatal(err)
	}
	if string(canon) != want {
		t.Fatalf("canonicalize:\n got %s\nwant %s", canon, want)
	}
	for _, bad := range []string{``, `[]`, `null`, `"x"`, `{"a":1}{"b":2}`, `{`} {
		if _, err := payscore.Canonicalize([]byte(bad)); err == nil {
			t.Errorf("Canonicalize(%q) accepted", bad)
		}
	}
}

func TestLoadKeysBase64AndPEM(t *testing.T) {
	k := payscoretest.HuifuKeys(t)
	privDER, _ := base64.StdEncoding.DecodeString(k.PrivateKey)
	pubDER, _ := base64.StdEncoding.DecodeString(k.PublicKey)
	privPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))
	pubPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	key, err := payscore.LoadPrivateKey(k.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	wrapped := "  " + k.PrivateKey[:40] + "\n" + k.PrivateKey[40:] + "\n"
	for name, s := range map[string]string{"base64": k.PrivateKey, "pem": privPEM, "pkcs1 pem": pkcs1, "wrapped base64": wrapped} {
		priv, err := payscore.LoadPrivateKey(s)
		if err != nil {
			t.Fatalf("private %s: %v", name, err)
		}
		for pname, ps := range map[string]string{"base64": k.PublicKey, "pem": pubPEM} {
			pub, err := payscore.LoadPublicKey(ps)
			if err != nil {
				t.Fatalf("public %s: %v", pname, err)
			}
			sig, err := payscore.NewRSASigner(priv).Sign([]byte("msg"))
			if err != nil {
				t.Fatal(err)
			}
			if err := payscore.NewRSAVerifier(pub).Verify([]byte("msg"), sig); err != nil {
				t.Fatalf("%s/%s: %v", name, pname, err)
			}
		}
	}
	for _, bad := range []string{"", "not a key", "-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----", base64.StdEncoding.EncodeToString([]byte("junk"))} {
		if _, err := payscore.LoadPrivateKey(bad); err == nil {
			t.Errorf("LoadPrivateKey(%q) accepted", bad)
		} else if strings.Contains(err.Error(), k.PrivateKey[:20]) {
			t.Errorf("error leaks key material")
		}
		if _, err := payscore.LoadPublicKey(bad); err == nil {
			t.Errorf("LoadPublicKey(%q) accepted", bad)
		}
	}
	// A public key is not a private key and vice versa.
	if _, err := payscore.LoadPrivateKey(k.PublicKey); err == nil {
		t.Error("public key loaded as private")
	}
}

func TestSignVerify(t *testing.T) {
	k := payscoretest.HuifuKeys(t)
	msg := []byte(`{"a":"1"}`)
	sig, err := k.Signer.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := base64.StdEncoding.DecodeString(sig); err != nil || !strings.HasSuffix(sig, "=") && len(sig)%4 != 0 {
		t.Fatalf("signature is not padded standard base64: %q", sig)
	}
	if err := k.Verifier.Verify(msg, sig); err != nil {
		t.Fatal(err)
	}
	// '+' that arrived as ' ' (unencoded form value) still verifies.
	if strings.Contains(sig, "+") {
		if err := k.Verifier.Verify(msg, strings.ReplaceAll(sig, "+", " ")); err != nil {
			t.Fatalf("space for plus: %v", err)
		}
	}
	flipped := append([]byte{}, msg...)
	flipped[2] ^= 1
	if err := k.Verifier.Verify(flipped, sig); !errors.Is(err, payscore.ErrNoValidSignature) {
		t.Fatalf("flipped message: %v", err)
	}
	if err := k.Verifier.Verify(msg, "%%%"); !errors.Is(err, payscore.ErrNoValidSignature) {
		t.Fatalf("non-base64: %v", err)
	}
	if err := k.Verifier.Verify(msg, ""); !errors.Is(err, payscore.ErrNotSigned) {
		t.Fatalf("empty: %v", err)
	}
}

func TestReqSeqID(t *testing.T) {
	seen := map[string]string{}
	sessions := []string{"01jbz3k5q8r9t2v4w6x8y0a2c4", "01jbz3k5q8r9t2v4w6x8y0a2c5", "a", "ab", "0001ab",
		strings.Repeat("z", 50), strings.Repeat("z", 51), "has-dash", "UPPER", "ünï"}
	steps := []payscore.Step{payscore.StepCreate, payscore.StepRegister, payscore.StepDebit, payscore.StepRefund}
	for _, s := range sessions {
		for _, st := range steps {
			for _, a := range []int{0, 1, 2, 10, 9999, 10000, -1} {
				for _, day := range []string{"20261204", "20261205", "2026124", ""} {
					id := payscore.ReqSeqID(s, st, a, day)
					if id != payscore.ReqSeqID(s, st, a, day) {
						t.Fatal("not deterministic")
					}
					if len(id) > 64 || len(id) == 0 {
						t.Fatalf("%q: length %d", id, len(id))
					}
					for _, c := range id {
						if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
							t.Fatalf("%q: character %q", id, c)
						}
					}
					key := s + "|" + string(st) + "|" + string(rune(a+100)) + "|" + day
					if prev, dup := seen[id]; dup {
						t.Fatalf("collision %q for %s and %s", id, prev, key)
					}
					seen[id] = key
				}
			}
		}
	}
	if got := payscore.ReqSeqID("01jbz3k5q8r9t2v4w6x8y0a2c4", payscore.StepDebit, 2, "20261204"); got != "DB00022026120401jbz3k5q8r9t2v4w6x8y0a2c4" {
		t.Fatalf("layout changed: %s", got)
	}
	// SessionOf reads the session back from the direct form, and nothing
	// from a hashed id or a serial that is not ours.
	for id, want := range map[string]string{
		payscore.ReqSeqID("01jbz3k5q8r9t2v4w6x8y0a2c4", payscore.StepDebit, 2, "20261204"): "01jbz3k5q8r9t2v4w6x8y0a2c4",
		payscore.ReqSeqID("a", payscore.StepRefund, 9999, "20261204"):                      "a",
		payscore.ReqSeqID("has-dash", payscore.StepCreate, 1, "20261204"):                  "",
		payscore.ReqSeqID(strings.Repeat("z", 51), payscore.StepCreate, 1, "20261204"):     "",
		"UP2026120412000000000001": "", "CR000120261204": "", "": "",
	} {
		if got := payscore.SessionOf(id); got != want {
			t.Errorf("SessionOf(%q) = %q, want %q", id, got, want)
		}
	}
}

func TestDateFormatsAreBeijing(t *testing.T) {
	// 2025-01-01 17:30:05 UTC is 2025-01-02 01:30:05 in Beijing.
	tm := mustTime(t, "2025-01-01T17:30:05Z")
	if got := payscore.FormatDate(tm); got != "20250102" {
		t.Fatalf("date %s", got)
	}
	if got := payscore.FormatDateTime(tm); got != "20250102013005" {
		t.Fatalf("datetime %s", got)
	}
	back, err := payscore.ParseDateTime("20250102013005")
	if err != nil || !back.Equal(tm) {
		t.Fatalf("parse: %v %v", back, err)
	}
}
