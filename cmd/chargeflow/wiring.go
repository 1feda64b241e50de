package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/chargeflow/chargeflow/payscore"
	"github.com/chargeflow/chargeflow/store"
	boltstore "github.com/chargeflow/chargeflow/store/bolt"
	redisstore "github.com/chargeflow/chargeflow/store/redis"
)

// openStore opens the configured store: Redis when CHARGEFLOW_REDIS_URL is
// set, else the embedded bbolt store in CHARGEFLOW_DATA_DIR. Errors name
// the variable.
func openStore(ctx context.Context, cfg *Config, log *slog.Logger) (store.Store, error) {
	if cfg.RedisURL != "" {
		wait := cfg.RedisWaitTimeout
		if wait == 0 {
			wait = -1 // the durability policy is off (docs/operations.md)
		}
		rs, err := redisstore.New(ctx, cfg.RedisURL, redisstore.Options{Prefix: cfg.RedisPrefix, WaitTimeout: wait, Logger: log.With("component", "store")})
		if err != nil {
			return nil, fmt.Errorf("CHARGEFLOW_REDIS_URL: %w", err)
		}
		return rs, nil
	}
	bs, err := boltstore.Open(cfg.DataDir, boltstore.Options{})
	if err != nil {
		return nil, fmt.Errorf("CHARGEFLOW_DATA_DIR: %w", err)
	}
	return bs, nil
}

// huifuConfig is the payscore.Config of a real (or separately run sandbox)
// Huifu: CHARGEFLOW_HUIFU_* and CHARGEFLOW_PAYSCORE_SERVICE_ID. Errors name
// the variable.
func huifuConfig(cfg *Config) (payscore.Config, error) {
	key, err := payscore.LoadPrivateKey(cfg.HuifuPrivateKey)
	if err != nil {
		return payscore.Config{}, fmt.Errorf("CHARGEFLOW_HUIFU_PRIVATE_KEY: %w", err)
	}
	pub, err := payscore.LoadPublicKey(cfg.HuifuPublicKey)
	if err != nil {
		return payscore.Config{}, fmt.Errorf("CHARGEFLOW_HUIFU_PUBLIC_KEY: %w", err)
	}
	return payscore.Config{BaseURL: cfg.HuifuBaseURL, SysID: cfg.HuifuSysID, ProductID: cfg.HuifuProductID,
		HuifuID: cfg.HuifuMerchantID, ServiceID: cfg.PayScoreServiceID,
		Signer: payscore.NewRSASigner(key), Verifier: payscore.NewRSAVerifier(pub)}, nil
}
