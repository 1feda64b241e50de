package redisstore

import (
	"strings"

	"github.com/redis/go-redis/v9"
)

// Every script touches the keys of ONE hash slot only (see the package doc).
// Numbers cross the Lua boundary as the strings Go wrote: Lua's tostring of
// a number would switch to exponent notation past 14 digits.

// claimScript: KEYS tasks. ARGV now, lease token, lease until, tids...
// Per tid: {tid, "claimed", effect, due, attempts, lastErr} | {tid, "later",
// next} | {tid, "gone"} | {tid, "corrupt"}.
var claimScript = redis.NewScript(strings.NewReplacer("$FIRST", "4", "$CLAIMED", "", "$LATER", "", "$GONE", "").Replace(claimLoop))

// claimAllScript is claimScript on one server (not a Cluster: outbox.go),
// which also moves each task's P:{due} entry as Claim would after it: a
// claimed task's to the lease's end, a later one's to its time, a gone
// one's a little later, first seen noted in P:{due}:gone. KEYS tasks, due,
// gone. ARGV now, lease token, lease until, due member prefix, recheck ms,
// tids...
var claimAllScript = redis.NewScript(strings.NewReplacer("$FIRST", "6",
	"$CLAIMED", "redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4]..tid)",
	"$LATER", "redis.call('ZADD', KEYS[2], 'XX', nx, ARGV[4]..tid)",
	"$GONE", "redis.call('ZADD', KEYS[2], 'XX', ARGV[5], ARGV[4]..tid); redis.call('ZADD', KEYS[3], 'NX', ARGV[1], ARGV[4]..tid)",
).Replace(claimLoop))

const claimLoop = `
local now = tonumber(ARGV[1])
local out = {}
for i = $FIRST, #ARGV do
  local tid = ARGV[i]
  local m = redis.call('HGET', KEYS[1], 'm:'..tid)
  if not m then
    out[#out+1] = {tid, 'gone'}
    $GONE
  else
    local due, lu, att, lease = string.match(m, '^(%-?%d+)\n(%-?%d+)\n(%d+)\n(.*)$')
    if not due then
      out[#out+1] = {tid, 'corrupt'}
    elseif tonumber(due) <= now and (lease == '' or tonumber(lu) <= now) then
      redis.call('HSET', KEYS[1], 'm:'..tid, due..'\n'..ARGV[3]..'\n'..att..'\n'..ARGV[2])
      out[#out+1] = {tid, 'claimed', redis.call('HGET', KEYS[1], 'e:'..tid) or '', due, att,
        redis.call('HGET', KEYS[1], 'x:'..tid) or ''}
      $CLAIMED
    else
      local nx = due
      if lease ~= '' and tonumber(lu) > tonumber(due) then nx = lu end
      out[#out+1] = {tid, 'later', nx}
      $LATER
    end
  end
end
return out
`

// settleScript: KEYS tasks. ARGV mode ("complete"|"retry"), tid, lease,
// next due, error text. Returns "ok" or "lost".
var settleScript = redis.NewScript(settleBody + `
return 'ok'
`)

// settleAllScript is settleScript on one server (not a Cluster: outbox.go),
// which also moves the task's P:{due} entry in the same step. KEYS tasks,
// due. ARGV those of settleScript, then the due member.
var settleAllScript = redis.NewScript(settleBody + `
if ARGV[1] == 'complete' then
  redis.call('ZREM', KEYS[2], ARGV[6])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[6])
end
return 'ok'
`)

const settleBody = `
local tid = ARGV[2]
local m = redis.call('HGET', KEYS[1], 'm:'..tid)
if not m then return 'lost' end
local due, lu, att, lease = string.match(m, '^(%-?%d+)\n(%-?%d+)\n(%d+)\n(.*)$')
if not due or lease == '' or lease ~= ARGV[3] then return 'lost' end
if ARGV[1] == 'complete' then
  redis.call('HDEL', KEYS[1], 'm:'..tid, 'e:'..tid, 'x:'..tid)
else
  redis.call('HSET', KEYS[1], 'm:'..tid, ARGV[4]..'\n0\n'..(tonumber(att)+1)..'\n', 'x:'..tid, ARGV[5])
end
`

// releaseScript: KEYS tasks. ARGV now, owner prefix, tids... Every task
// under a live lease (lease-until > now) whose token's owner starts with the
// prefix loses its lease and is due at min(due, now); attempts and the last
// error stay. Returns {tid, due} per task released.
var releaseScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local prefix = ARGV[2]
local out = {}
for i = 3, #ARGV do
  local tid = ARGV[i]
  local m = redis.call('HGET', KEYS[1], 'm:'..tid)
  if m then
    local due, lu, att, lease = string.match(m, '^(%-?%d+)\n(%-?%d+)\n(%d+)\n(.*)$')
    if due and lease ~= '' and tonumber(lu) > now then
      local owner = string.match(lease, '^(.*)#') or lease
      if string.sub(owner, 1, #prefix) == prefix then
        if tonumber(due) > now then due = ARGV[1] end
        redis.call('HSET', KEYS[1], 'm:'..tid, due..'\n0\n'..att..'\n')
        out[#out+1] = {tid, due}
      end
    end
  end
end
return out
`)

// feedScript: KEYS stream, session version key. ARGV version (0 = no
// check), max length, field, value, ... Appends unless a change of an equal
// or newer version of the session was already appended (two processes'
// appends may cross; the feed never goes back in a session's versions).
var feedScript = redis.NewScript(`
local v = tonumber(ARGV[1])
if v > 0 then
  local last = tonumber(redis.call('GET', KEYS[2]) or '0')
  if last >= v then return false end
  redis.call('SET', KEYS[2], ARGV[1], 'PX', 86400000)
end
local args = {'XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*'}
for i = 3, #ARGV do args[#args+1] = ARGV[i] end
return redis.call(unpack(args))
`)

// casScript: KEYS key. ARGV old (""= absent), new ("" = delete). A
// compare-and-set of a string key. Returns 1 when done.
var casScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
return 1
`)

// hcasScript: KEYS hash. ARGV field, old, new: compare-and-set of a field.
var hcasScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if cur ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
`)

// idemPutScript: KEYS key. ARGV now, expiry, hash, ttl ms.
// Returns {1} when created, else {0, h, s, b, sid, exp}.
var idemPutScript = redis.NewScript(`
local e = redis.call('HGET', KEYS[1], 'exp')
if e and tonumber(e) > tonumber(ARGV[1]) then
  local r = redis.call('HMGET', KEYS[1], 'h', 's', 'b', 'sid', 'exp')
  return {0, r[1] or '', r[2] or '', r[3] or '', r[4] or '', r[5] or ''}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'h', ARGV[3], 'exp', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1}
`)

// idemSaveScript: KEYS key. ARGV now, hash, status, body, session id.
var idemSaveScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'h', 'exp')
if not r[1] or not r[2] or tonumber(r[2]) <= tonumber(ARGV[1]) then return 'notfound' end
if r[1] ~= ARGV[2] then return 'conflict' end
redis.call('HSET', KEYS[1], 's', ARGV[3], 'b', ARGV[4], 'sid', ARGV[5])
return 'ok'
`)

// markScript: KEYS key. ARGV now, expiry, ttl ms. Returns 1 the first time.
var markScript = redis.NewScript(`
local e = redis.call('GET', KEYS[1])
if e and tonumber(e) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`)

var allScripts = []*redis.Script{commitSlotScript, commitAllScript, connReleaseScript, claimScript, claimAllScript, settleScript, settleAllScript, releaseScript, feedScript, casScript, hcasScript,
	idemPutScript, idemSaveScript, markScript, wclaimScript, wsettleScript, wretryScript, wtrimScript, wreleaseScript, wdueTouchScript, wdueSetScript}
