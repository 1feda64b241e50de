package charger

import "strings"

// The broker ACL of docs/protocol.md §1, as pure functions over filters (both the
// embedded broker's hook and the tests use them; deploy/mosquitto expresses
// the same rules as pattern lines):
//
//	charger cp: publish {prefix}/cp/state and {prefix}/cp/up/#,
//	            subscribe {prefix}/cp/down/# (or narrower)
//	service:    publish and subscribe anything under {prefix}/, shared
//	            subscriptions ($share/<group>/…) included
//
// A subscribe request is a FILTER: it is allowed only if every topic it can
// match is allowed, so wildcards are checked level by level, a literal
// filter is never a prefix (ev/v1/A does not cover ev/v1/Ax), and a
// $share/<group>/ prefix is stripped before checking. Chargers may not use
// $share at all: it has no use for one device.

// chargerMayPublish reports whether charger cp may publish on topic.
func (t Topics) chargerMayPublish(cp, topic string) bool {
	if strings.ContainsAny(topic, "+#") {
		return false
	}
	if topic == t.State(cp) {
		return true
	}
	up := t.prefix() + "/" + cp + "/up"
	return topic == up || strings.HasPrefix(topic, up+"/")
}

// chargerMayRead reports whether charger cp may subscribe to filter (or
// receive a message on a topic, which is a filter without wildcards).
func (t Topics) chargerMayRead(cp, filter string) bool {
	if strings.HasPrefix(filter, "$") {
		return false
	}
	allowed := strings.Split(t.prefix()+"/"+cp+"/down", "/")
	f := strings.Split(filter, "/")
	if len(f) < len(allowed) {
		return false
	}
	for i, lvl := range allowed {
		if f[i] != lvl { // a wildcard here would widen the filter beyond cp/down
			return false
		}
	}
	return validFilterTail(f[len(allowed):])
}

// serviceMayAccess reports whether chargeflow's own account may use filter
// (subscribe) or topic (publish) under the prefix.
func (t Topics) serviceMayAccess(filter string, write bool) bool {
	if !write {
		if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
			_, f, ok := strings.Cut(rest, "/")
			if !ok {
				return false
			}
			filter = f
		}
	} else if strings.ContainsAny(filter, "+#") {
		return false
	}
	p := strings.Split(t.prefix(), "/")
	f := strings.Split(filter, "/")
	if len(f) <= len(p) {
		return false
	}
	for i, lvl := range p {
		if f[i] != lvl {
			return false
		}
	}
	return validFilterTail(f[len(p):])
}

// validFilterTail checks wildcard placement: '+' and '#' occupy a whole
// level and '#' is last.
func validFilterTail(levels []string) bool {
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return false
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return false
		}
	}
	return true
}
