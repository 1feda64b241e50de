package main

import "path/filepath"

// brokerStoreFile is where the embedded broker keeps its clients' sessions,
// subscriptions, in-flight and retained messages, in CHARGEFLOW_DATA_DIR
// (docs/operations.md, "A restart of the embedded stack").
const brokerStoreFile = "mqtt-broker.bolt"

func brokerStorePath(cfg *Config) string {
	if cfg.DataDir == "" {
		return ""
	}
	return filepath.Join(cfg.DataDir, brokerStoreFile)
}
