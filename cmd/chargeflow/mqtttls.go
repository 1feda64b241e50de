package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/chargeflow/chargeflow/charger"
)

// MQTT over TLS settings (docs/contract.md §4, docs/operations.md "MQTT over
// TLS"): the embedded broker's TLS listener, and the CA the paho link and
// the simulator trust.

// checkMQTTTLS reports bad TLS settings, one line each naming the variable:
// a listener without its pair, a pair that does not load (which file is at
// fault), a CA file without certificates.
func (c *Config) checkMQTTTLS(bad func(env, format string, args ...any)) {
	switch {
	case c.MQTTTLSListen != "" && c.MQTTURL != "":
		bad("CHARGEFLOW_MQTT_TLS_LISTEN", "is the embedded broker's, and CHARGEFLOW_MQTT_URL names an external broker (give that broker the TLS listener)")
	case c.MQTTTLSListen != "":
		if c.MQTTTLSListen == c.MQTTListen {
			bad("CHARGEFLOW_MQTT_TLS_LISTEN", "must differ from CHARGEFLOW_MQTT_LISTEN (%s)", c.MQTTListen)
		}
		if c.MQTTTLSCert == "" {
			bad("CHARGEFLOW_MQTT_TLS_CERT", "is required with CHARGEFLOW_MQTT_TLS_LISTEN (a PEM certificate chain)")
		}
		if c.MQTTTLSKey == "" {
			bad("CHARGEFLOW_MQTT_TLS_KEY", "is required with CHARGEFLOW_MQTT_TLS_LISTEN (a PEM private key)")
		}
		if c.MQTTTLSCert != "" && c.MQTTTLSKey != "" {
			if _, err := c.certReloader(nil); err != nil {
				env, msg := certErrorSetting(err)
				bad(env, "%s", msg)
			}
		}
	case c.MQTTTLSCert != "" || c.MQTTTLSKey != "":
		bad("CHARGEFLOW_MQTT_TLS_LISTEN", "is required when CHARGEFLOW_MQTT_TLS_CERT or CHARGEFLOW_MQTT_TLS_KEY is set")
	}
	if c.MQTTCAFile != "" {
		if _, err := charger.ClientTLSConfig(c.MQTTCAFile); err != nil {
			bad("CHARGEFLOW_MQTT_CA_FILE", "%v", err)
		}
	}
}

// certReloader loads the TLS listener's pair; it is read again whenever one
// of the files changes.
func (c *Config) certReloader(log *slog.Logger) (*charger.CertReloader, error) {
	return charger.NewCertReloader(c.MQTTTLSCert, c.MQTTTLSKey, log)
}

// certErrorSetting names the variable of the file a certificate error is about.
func certErrorSetting(err error) (env, msg string) {
	var ce *charger.CertError
	if errors.As(err, &ce) {
		if ce.File == "key" {
			return "CHARGEFLOW_MQTT_TLS_KEY", ce.Error()
		}
		return "CHARGEFLOW_MQTT_TLS_CERT", ce.Error()
	}
	return "CHARGEFLOW_MQTT_TLS_CERT", err.Error()
}

// brokerConnectError adds what to check when a broker's certificate was refused.
func brokerConnectError(err error) error {
	if charger.IsCertificateError(err) {
		return fmt.Errorf("%w (the broker's certificate is not trusted: CHARGEFLOW_MQTT_CA_FILE must hold the CA that signed it, and the URL's host must be a name in it)", err)
	}
	return err
}

// embeddedTLS adds the TLS listener to the embedded broker's configuration
// when CHARGEFLOW_MQTT_TLS_LISTEN is set (in --dev a taken port moves, as
// for the other listeners).
func (a *app) embeddedTLS(bc *charger.EmbeddedConfig) error {
	if a.cfg.MQTTTLSListen == "" {
		return nil
	}
	addr, err := freeAddr(a.cfg.MQTTTLSListen, a.cfg.Dev, a.log, "CHARGEFLOW_MQTT_TLS_LISTEN")
	if err != nil {
		return err
	}
	rl, err := a.cfg.certReloader(a.log.With("component", "broker"))
	if err != nil {
		env, msg := certErrorSetting(err)
		return fmt.Errorf("%s: %s", env, msg)
	}
	leaf := rl.Certificate().Leaf
	a.log.Info("mqtt tls certificate", "subject", leaf.Subject.String(), "dns", leaf.DNSNames, "ips", leaf.IPAddresses,
		"not_after", leaf.NotAfter)
	bc.TLSListenAddr, bc.TLSConfig = addr, rl.ServerConfig()
	return nil
}

// tlsReady is the " mqtts=ssl://…" part of the ready line when the
// embedded broker has a TLS listener.
func tlsReady(b *charger.EmbeddedBroker) string {
	if b == nil || b.TLSURL() == "" {
		return ""
	}
	return " mqtts=" + b.TLSURL()
}
