package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// healthTTL is how long a health key lives; it only ever holds the time of
// the last probe.
const healthTTL = time.Minute

// ProbeCommit reports whether the store can commit now: it writes a small
// health key (P:health, the time in ms, expiring after a minute) on the
// primary, or on Cluster one on every primary (P:health:{…}, a hash tag in
// each primary's slots), since a commit may need any of them (the session's
// slot, {due}, {feed}). It fails while a primary is down or being failed
// over, while a write reaches a replica (READONLY) and when the caller's
// deadline passes first — bound ctx, as /readyz does (docs/operations.md).
// It costs one write per primary, plus one CLUSTER SLOTS on Cluster.
func (s *Store) ProbeCommit(ctx context.Context) error {
	now := strconv.FormatInt(s.opts.Now().UnixMilli(), 10)
	cc, ok := s.c.(*redis.ClusterClient)
	if !ok {
		return mapErr(s.c.Set(ctx, s.p+":health", now, healthTTL).Err())
	}
	slots, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		return fmt.Errorf("cluster slots: %w", mapErr(err))
	}
	keys := map[string]string{} // primary → key in one of its ranges
	covered := 0
	for _, r := range slots {
		covered += r.End - r.Start + 1
		if len(r.Nodes) == 0 {
			continue
		}
		if _, done := keys[r.Nodes[0].ID]; !done {
			keys[r.Nodes[0].ID] = s.p + ":health:{" + tagInSlots(r.Start, r.End) + "}"
		}
	}
	if covered < slotCount {
		return fmt.Errorf("%w: cluster serves %d of %d slots", errUncovered, covered, slotCount)
	}
	_, err = cc.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Set(ctx, k, now, healthTTL)
		}
		return nil
	})
	return mapErr(err)
}

var errUncovered = errors.New("slots not covered")

const slotCount = 16384

// tagInSlots returns a short hash tag whose slot is in [lo, hi]: "h" and a
// number, the first that hashes there (a range of a cluster's primary spans
// thousands of slots, so few are tried; a range of one slot takes at most a
// few tens of thousands of CRCs, once per probe).
func tagInSlots(lo, hi int) string {
	for n := range 1 << 20 {
		tag := "h" + strconv.Itoa(n)
		if sl := int(crc16(tag)) % slotCount; lo <= sl && sl <= hi {
			return tag
		}
	}
	return "h" // not a range of slots: the write still tests a primary
}

// crc16 is the CRC16 (XMODEM) Redis Cluster hashes keys with.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
