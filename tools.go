//go:build tools

// Package tools pins the project's dependencies while the packages that use
// them are being written. Removed once every dependency has a real importer.
package tools

import (
	_ "github.com/eclipse/paho.mqtt.golang"
	_ "github.com/go-chi/chi/v5"
	_ "github.com/looplab/fsm"
	_ "github.com/mochi-mqtt/server/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/redis/go-redis/v9"
	_ "go.etcd.io/bbolt"
	_ "go.uber.org/goleak"
	_ "pgregory.net/rapid"
)
