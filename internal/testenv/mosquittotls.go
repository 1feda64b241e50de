package testenv

import (
	"fmt"
	"strings"
	"testing"
)

// MosquittoTLSProcess is MosquittoProcess with a second listener, speaking
// TLS with the server certificate sc on another free port (Process.TLSURL,
// ssl://127.0.0.1:port). The plain listener stays (Process.URL), so a test
// can compare both. extraConfig is as for MosquittoProcess and applies to
// both listeners (Mosquitto's security settings are global unless
// per_listener_settings is on).
func MosquittoTLSProcess(t testing.TB, sc ServerCert, extraConfig string) *Process {
	t.Helper()
	var tlsPort int
	config := func(dir string) string {
		port, err := freePort()
		if err != nil {
			t.Fatalf("testenv: free port: %v", err)
		}
		tlsPort = port
		// Listener options (the certificate and key) apply to the listener
		// above them: the TLS listener comes last.
		conf := strings.ReplaceAll(extraConfig, "{{dir}}", dir)
		if !strings.Contains(conf, "\nuser ") && !strings.HasPrefix(conf, "user ") {
			// Started as root, Mosquitto drops to its own user before it
			// reads the certificate, which then sits in a directory only
			// the test's user can read. (No effect when not root.)
			conf = "user root\n" + conf
		}
		return conf +
			fmt.Sprintf("\nlistener %d 127.0.0.1\ncertfile %s\nkeyfile %s\n", port, sc.CertFile, sc.KeyFile)
	}
	p := mosquittoProcess(t, config)
	p.TLSURL = fmt.Sprintf("ssl://127.0.0.1:%d", tlsPort)
	return p
}
