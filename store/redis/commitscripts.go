package redisstore

import "github.com/redis/go-redis/v9"

// The commit scripts (commit.go). Both start with commitHead, which checks
// the version and writes the session's own keys; commitSlotScript stops
// there (Cluster: one slot), commitAllScript goes on with the derived
// indexes and the feed (one server: every key at hand).
//
// ARGV of the head: mode ("create"|"commit"), expected version, new version,
// record JSON, nHist, hist..., nOps, then per op "a" tid effectJSON meta
// score | "d" tid, then nWebhooks and per event seq, delivery JSON, next ms,
// log key (webhooks.go), then the record's index line (indexLine).
// KEYS 1..5 of both: rec, hist, tasks, webhook deliveries, webhook queue.
//
// The index line, kept in the record's hash as field i, names what the
// derived indexes hold for that record: "<version>\n<connector key or
// empty when not active>\n<sort key>\n<out_order_no key or empty>\n" then
// one "<list key>\n" per list. A commit reads the old line to know which
// entries the old record had: no JSON decoding of the old record. A record
// without it, or whose line names another version (written by a store
// before the line existed), is "legacy": the head then returns the old JSON
// and the caller tidies from it.
const commitHead = `
local cur = redis.call('HGET', KEYS[1], 'v')
if ARGV[1] == 'create' then
  if cur then return {'exists'} end
else
  if not cur then return {'notfound'} end
  if cur ~= ARGV[2] then return {'conflict', cur} end
end
local oi, old = '', ''
if cur then
  oi = redis.call('HGET', KEYS[1], 'i') or ''
  if string.sub(oi, 1, #cur + 1) ~= cur .. '\n' then
    oi = ''
    old = redis.call('HGET', KEYS[1], 'd') or ''
  end
end
local i = 5
local n = tonumber(ARGV[i]); i = i + 1
for j = 1, n do redis.call('RPUSH', KEYS[2], ARGV[i]); i = i + 1 end
n = tonumber(ARGV[i]); i = i + 1
local added, removed, score = {}, {}, {}
for j = 1, n do
  local op, tid = ARGV[i], ARGV[i+1]
  if op == 'a' then
    if redis.call('HSETNX', KEYS[3], 'm:'..tid, ARGV[i+3]) == 1 then
      redis.call('HSET', KEYS[3], 'e:'..tid, ARGV[i+2])
      added[#added+1] = tid
      score[tid] = ARGV[i+4]
    end
    i = i + 5
  else
    if redis.call('HDEL', KEYS[3], 'm:'..tid, 'e:'..tid, 'x:'..tid) > 0 then removed[#removed+1] = tid end
    i = i + 2
  end
end
local logged = {}
n = tonumber(ARGV[i]); i = i + 1
for j = 1, n do
  if redis.call('HSETNX', KEYS[4], 'd:'..ARGV[i], ARGV[i+1]) == 1 then
    redis.call('HSET', KEYS[4], 'n:'..ARGV[i], ARGV[i+2])
    redis.call('ZADD', KEYS[5], ARGV[i], ARGV[i])
    logged[#logged+1] = ARGV[i+3]
  end
  i = i + 4
end
local ni = ARGV[i]; i = i + 1
redis.call('HSET', KEYS[1], 'v', ARGV[3], 'd', ARGV[4], 'i', ni)
`

// commitSlotScript is the commit on Cluster: the session's slot only.
// Returns {"ok", legacy old JSON or "", {added...}, {removed...}, old index
// line or ""} or {"exists"} | {"notfound"} | {"conflict", storedVersion}.
var commitSlotScript = redis.NewScript(commitHead + `
return {'ok', old, added, removed, oi}
`)

// commitAllScript is the whole commit on one server (single or Sentinel):
// the head, then the derived indexes and the feed in the same step, so no
// crash can come between them. It names keys of the old index line that are
// not in KEYS (an old list, an old out_order_no): a server that is not a
// Cluster runs that; the store runs this script only on a client that is not
// a Cluster client (commit.go).
//
// KEYS 6.. : due, feed, feed version, webhook due, its stamps, its counter,
// webhook log, webhook pending, connector, then the new record's lists, then
// its out_order_no key if it has one. ARGV after the head: session id, due
// member prefix, number of lists, then the feed's field count (0 = no
// change to publish), max length, fields..., then the webhook due ms.
// The last five ARGV take the connector for a creation (commitTake), so a
// creation is one round trip too: take ("1"|"0"), the claim "<id>|<ms>", now
// ms, grace ms, the prefix of another session's record key ("P:{s:").
// Returns what commitSlotScript returns (without the old index line), or
// {"busy", other id} | {"creating", other id} | {"connlegacy"}.
var commitAllScript = redis.NewScript(commitTake + commitHead + `
local sid, mp, nl = ARGV[i], ARGV[i+1], tonumber(ARGV[i+2]); i = i + 3
local function lines(s)
  local t = {}
  for l in string.gmatch(s, '([^\n]*)\n') do t[#t+1] = l end
  return t
end
local nw = lines(ni)
local sk, lists = nw[3], {}
for j = 1, nl do
  lists[KEYS[14+j]] = true
  redis.call('ZADD', KEYS[14+j], 0, sk)
end
local oon = KEYS[15+nl]
if oon then redis.call('SET', oon, sid) end
for _, tid in ipairs(added) do redis.call('ZADD', KEYS[6], score[tid], mp..tid) end
for _, tid in ipairs(removed) do redis.call('ZREM', KEYS[6], mp..tid) end
if oi ~= '' then
  local ol = lines(oi)
  for j = 5, #ol do
    if ol[j] ~= '' and (ol[3] ~= sk or not lists[ol[j]]) then redis.call('ZREM', ol[j], ol[3]) end
  end
  if ol[4] ~= '' and ol[4] ~= oon and redis.call('GET', ol[4]) == sid then redis.call('DEL', ol[4]) end
end
if nw[2] == '' then
  local c = redis.call('GET', KEYS[14])
  if c and string.sub(c, 1, #sid + 1) == sid .. '|' then redis.call('DEL', KEYS[14]) end
end
local nf = tonumber(ARGV[i]); i = i + 1
if nf > 0 then
  if tonumber(redis.call('GET', KEYS[8]) or '0') < tonumber(ARGV[3]) then
    redis.call('SET', KEYS[8], ARGV[3], 'PX', 86400000)
    local args = {'XADD', KEYS[7], 'MAXLEN', '~', ARGV[i], '*'}
    for j = 1, nf do args[#args+1] = ARGV[i+j] end
    redis.call(unpack(args))
  end
  i = i + 1 + nf
end
if #logged > 0 then
  for _, lk in ipairs(logged) do
    redis.call('ZADD', KEYS[12], 0, lk)
    redis.call('ZADD', KEYS[13], 0, lk)
  end
  local v = redis.call('INCR', KEYS[11])
  redis.call('HSET', KEYS[10], sid, v)
  local c = redis.call('ZSCORE', KEYS[9], sid)
  if not c or tonumber(c) > tonumber(ARGV[i]) then redis.call('ZADD', KEYS[9], ARGV[i], sid) end
end
return {'ok', old, added, removed}
`)

// commitTake takes the connector before a creation on one server, the way
// takeConnector (sessions.go) does: a claim naming another session is
// respected while that session is active on this connector (its index line
// says so), or, if it does not exist, for the grace a creation may take;
// else it is stale and taken over. A claim naming a record without an index
// line is answered "connlegacy": the caller takes the connector itself.
const commitTake = `
local nA = #ARGV
if ARGV[1] == 'create' and ARGV[nA-4] == '1' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
  local claim, now, grace, rp = ARGV[nA-3], tonumber(ARGV[nA-2]), tonumber(ARGV[nA-1]), ARGV[nA]
  local sid = string.match(claim, '^([^|]*)|')
  local c = redis.call('GET', KEYS[14])
  local oid, at
  if c then oid, at = string.match(c, '^([^|]*)|(.*)$') end
  if oid ~= sid then
    if oid then
      local o = redis.call('HMGET', rp .. oid .. '}', 'v', 'i')
      if o[1] then
        local oi = o[2] or ''
        if string.sub(oi, 1, #o[1] + 1) ~= o[1] .. '\n' then return {'connlegacy'} end
        if string.match(oi, '^[^\n]*\n([^\n]*)\n') == KEYS[14] then return {'busy', oid} end
      elseif (tonumber(at) or 0) + grace > now then
        return {'creating', oid}
      end
    end
    redis.call('SET', KEYS[14], claim)
  end
end
`

// connReleaseScript: KEYS connector key. ARGV session id. Deletes the key
// if it names that session ("<id>|<ms>"). Returns 1 when deleted.
var connReleaseScript = redis.NewScript(`
local c = redis.call('GET', KEYS[1])
if c and string.sub(c, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then return redis.call('DEL', KEYS[1]) end
return 0
`)
