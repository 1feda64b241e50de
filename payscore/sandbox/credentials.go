package sandbox

import (
	"fmt"

	"github.com/chargeflow/chargeflow/payscore"
)

// Credentials are the settings that point chargeflow at a sandbox.
type Credentials struct {
	SysID, ProductID, HuifuID, ServiceID string
	MerchantPrivateKey                   string // chargeflow's signing key (base64 PKCS#8)
	HuifuPublicKey                       string // the sandbox's public key (base64 PKIX)
}

// Credentials returns the sandbox's credentials (its identities as
// ClientConfig gives them, and the generated merchant key).
func (s *Sandbox) Credentials() Credentials {
	return Credentials{SysID: firstNonEmpty(s.opts.SysID, defaultSysID), ProductID: firstNonEmpty(s.opts.ProductID, defaultProductID),
		HuifuID: firstNonEmpty(s.opts.HuifuID, defaultHuifuID), ServiceID: firstNonEmpty(s.opts.ServiceID, DefaultServiceID),
		MerchantPrivateKey: s.merchantPriv, HuifuPublicKey: s.huifuPub}
}

// The identities a sandbox accepts and ClientConfig gives when Options
// leave them empty.
const (
	defaultSysID     = "6666000100000000"
	defaultProductID = "PAYUN"
	defaultHuifuID   = "6666000100000001"
)

// StateCredentials reads the credentials of the sandbox whose state file is
// path, without opening (or writing) it: a running sandbox owns the file. A
// sandbox started with default options is assumed (the file does not keep
// them): ask a sandbox started with other identities or a service id over
// GET /_sandbox/keys instead.
func StateCredentials(path string) (Credentials, error) {
	st, err := readState(path)
	if err != nil {
		return Credentials{}, err
	}
	if st == nil || st.HuifuPrivateKey == "" || st.MerchantPrivateKey == "" {
		return Credentials{}, fmt.Errorf("sandbox: state file %s holds no generated keys", path)
	}
	hk, err := payscore.LoadPrivateKey(st.HuifuPrivateKey)
	if err != nil {
		return Credentials{}, fmt.Errorf("sandbox: state file %s: huifu key: %w", path, err)
	}
	pub, err := payscore.EncodePublicKey(&hk.PublicKey)
	if err != nil {
		return Credentials{}, err
	}
	c := stateDefaults()
	c.MerchantPrivateKey, c.HuifuPublicKey = st.MerchantPrivateKey, pub
	return c, nil
}

// stateDefaults are the credentials of a sandbox started with default
// options, keys left out.
func stateDefaults() Credentials {
	return Credentials{SysID: defaultSysID, ProductID: defaultProductID, HuifuID: defaultHuifuID, ServiceID: DefaultServiceID}
}
