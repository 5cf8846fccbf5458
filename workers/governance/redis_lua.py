"""The Lua scripts of the Redis ledger (redis_ledger.py). Pure: text only.

Each ledger operation is ONE script, so Redis runs it atomically over every counter it touches.
Python decides everything that needs the directory or the calendar (which counters a request
touches, their limits, their period's end) and passes it in; the scripts only compare and add.

Conventions shared by every script:

* Every key of one ledger starts with the same prefix `{NS}:` (a Redis Cluster hash tag), so all of
  them live in one slot. Keys named inside a stored record (a reservation's counters) or derived
  from a pid or rid are built by the scripts from that prefix (ARGV), never passed in KEYS: they
  are in the same slot, which is what Redis Cluster checks.
* Numbers: money in integer micro-dollars, tokens and counts as integers. Lua numbers are doubles,
  exact for integers up to 2^53 (the Python side refuses amounts above that and caps limits to
  it). Increments go through HINCRBY with integer strings (`I(x)`), never floats.
* Times are the caller's clock (`now`, epoch seconds as Python's repr, stored verbatim): period
  bounds, TTL cut-offs and retention all use it, so the scripts never read Redis' own clock except
  through relative EXPIREs (a counter lives `deadline - now` more seconds, at least 1).
* A counter is a hash {u: used, r: reserved} (budget: micro-dollars; requests: count in u;
  tokens: u used, r reserved). A counter reference inside a record is "key deadline", and a counter
  whose deadline has passed is no longer touched (it is invisible: its period ended long ago).
  A counter gets its EXPIRE (deadline - now) when a script creates it, not on every change.

Replies are arrays whose first element is a status word; the Python side turns them into the
same dicts as LedgerState.
"""
from __future__ import annotations

PRELUDE = r"""
local function I(x) return string.format('%d', x) end
local function touch(k, deadline, now)
  local t = math.ceil(deadline - now)
  if t < 1 then t = 1 end
  redis.call('EXPIRE', k, I(t))
end
-- call fn(counter key, deadline) for every "key deadline" pair of a record's list still alive at now
local function each(list, now, fn)
  if not list then return end
  local k
  for w in string.gmatch(list, '%S+') do
    if k == nil then k = w else
      local d = tonumber(w)
      if d > now then fn(k, d) end
      k = nil
    end
  end
end
-- add n to a counter's field and return the new value (nil when n is 0: nothing done); when
-- that leaves the field at n (it was 0 or absent: the counter may have been created just now)
-- the counter gets its TTL, which it otherwise has already
local function bump(k, field, n, d, now)
  if n == 0 then return nil end
  local v = redis.call('HINCRBY', k, field, I(n))
  if v == n then touch(k, d, now) end
  return v
end
-- the worker process `pid` no longer holds `rid`
local function disown(owners, P, pid, rid)
  if pid and pid ~= '' then
    if redis.call('HINCRBY', owners, pid, -1) <= 0 then redis.call('HDEL', owners, pid) end
    redis.call('SREM', P .. 'p:' .. pid, rid)
  end
end
"""

# reserve(rid): check every counter, then reserve on all of them, or change nothing.
#   KEYS  1 ready marker, 2 reservation r:<rid>, 3 open zset, 4 owners hash, 5 pid set p:<pid>
#         (any key when no pid), 6.. counters: nb budgets, nr request limits, nt token limits
#   ARGV  1 now, 2 rid, 3 max micros, 4 est tokens, 5 pid ('' none), 6 key id, 7 env,
#         8 nb, 9 nr, 10 nt, 11 record TTL seconds, then per counter i: 10+2i limit, 11+2i deadline
#   ->    {'LOST'}                   the ledger's data is gone (no ready marker): rebuild first
#         {'DUP'}                    an open reservation has this rid
#         {'BUDGET'|'LIMIT', i, u, r}  counter i refuses (the first in order); nothing changed
#         {'OK', u1, r1, u2, r2, ...}  every counter after the reservation
RESERVE = PRELUDE + r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {'LOST'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'DUP'} end
local now = tonumber(ARGV[1])
local max, est = tonumber(ARGV[3]), tonumber(ARGV[4])
local nb, nr, nt = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local n = nb + nr + nt
local u, r, new = {}, {}, {}
for i = 1, n do
  local v = redis.call('HMGET', KEYS[5 + i], 'u', 'r')
  if not v[1] and not v[2] then new[i] = true end
  local ui, ri = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  local lim = tonumber(ARGV[10 + 2 * i])
  local over
  if i <= nb then over = ui + ri + max > lim
  elseif i <= nb + nr then over = ui >= lim
  else over = ui + ri + est > lim end
  if over then
    if i <= nb then return {'BUDGET', i, ui, ri} end
    return {'LIMIT', i, ui, ri}
  end
  u[i], r[i] = ui, ri
end
local bl, tl = {}, {}
for i = 1, n do
  local k, d = KEYS[5 + i], ARGV[11 + 2 * i]
  if i <= nb then
    r[i] = redis.call('HINCRBY', k, 'r', ARGV[3])
    bl[#bl + 1] = k; bl[#bl + 1] = d
  elseif i <= nb + nr then
    u[i] = redis.call('HINCRBY', k, 'u', 1)
  else
    r[i] = redis.call('HINCRBY', k, 'r', ARGV[4])
    tl[#tl + 1] = k; tl[#tl + 1] = d
  end
  if new[i] then touch(k, tonumber(d), now) end
end
local rid, pid = ARGV[2], ARGV[5]
redis.call('HSET', KEYS[2], 'k', ARGV[6], 'e', ARGV[7], 'm', ARGV[3], 't', ARGV[4], 'c', ARGV[1],
           'p', pid, 'b', table.concat(bl, ' '), 'tk', table.concat(tl, ' '))
redis.call('EXPIRE', KEYS[2], ARGV[11])
redis.call('ZADD', KEYS[3], ARGV[1], rid)
if pid ~= '' then
  redis.call('HINCRBY', KEYS[4], pid, 1)
  redis.call('SADD', KEYS[5], rid)
end
local out = {'OK'}
for i = 1, n do out[#out + 1] = u[i]; out[#out + 1] = r[i] end
return out
"""

# settle(rid): the reservation's counters get the real cost instead of the maximum; a rid settled
# before counts once; an expired rid (charged its maximum) is corrected to the real cost; an
# unknown rid charges the caller's key and env in the current periods (the counters passed).
#   KEYS  1 r:<rid>, 2 x:<rid>, 3 open zset, 4 expired zset, 5 settled zset, 6 savings hash,
#         7 owners hash, 8.. the caller's current counters: nb budgets then nt token limits
#   ARGV  1 now, 2 rid, 3 cost micros, 4 tokens, 5 saved micros, 6 savings field,
#         7 settled_max, 8 nb, 9 nt, 10 prefix, then per counter i: 10+i deadline
#   ->    {status, key, env, u1, r1, ...}  status 'S' settled an open reservation, 'C' corrected
#         an expired one, 'U' charged an unknown rid, 'D' duplicate (nothing charged); key and env
#         are the reservation's ('' for U and D); then the caller's budget counters after it.
SETTLE = PRELUDE + r"""
local now, rid, P = tonumber(ARGV[1]), ARGV[2], ARGV[10]
local cost, tok = tonumber(ARGV[3]), tonumber(ARGV[4])
local nb, nt = tonumber(ARGV[8]), tonumber(ARGV[9])
local was = redis.call('ZSCORE', KEYS[5], rid)
if ARGV[5] ~= '0' and not was then redis.call('HINCRBY', KEYS[6], ARGV[6], ARGV[5]) end
local function remember()
  redis.call('ZADD', KEYS[5], ARGV[1], rid)
  local over = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[7])
  if over > 0 then redis.call('ZPOPMIN', KEYS[5], over) end
end
local status, key, env = 'D', '', ''
local seen = {}     -- counter -> {u, r} as this settle left it (both known), to answer without reading
local rec = redis.call('HMGET', KEYS[1], 'k', 'e', 'm', 't', 'p', 'b', 'tk')
if rec[1] then
  local max, est = tonumber(rec[3]), tonumber(rec[4])
  each(rec[6], now, function(k, d)
    local r, u = bump(k, 'r', -max, d, now), bump(k, 'u', cost, d, now)
    if r and u then seen[k] = {u, r} end
  end)
  each(rec[7], now, function(k, d) bump(k, 'r', -est, d, now); bump(k, 'u', tok, d, now) end)
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[3], rid)
  disown(KEYS[7], P, rec[5], rid)
  remember()
  status, key, env = 'S', rec[1], rec[2]
elseif was then
  status = 'D'
else
  local x = redis.call('HMGET', KEYS[2], 'k', 'e', 'm', 't', 'b', 'tk')
  if x[1] then
    local dm, dt = cost - tonumber(x[3]), tok - tonumber(x[4])
    each(x[5], now, function(k, d) bump(k, 'u', dm, d, now) end)
    each(x[6], now, function(k, d) bump(k, 'u', dt, d, now) end)
    redis.call('DEL', KEYS[2])
    redis.call('ZREM', KEYS[4], rid)
    remember()
    status, key, env = 'C', x[1], x[2]
  else
    for i = 1, nb + nt do
      bump(KEYS[7 + i], 'u', i <= nb and cost or tok, tonumber(ARGV[10 + i]), now)
    end
    remember()
    status = 'U'
  end
end
local out = {status, key, env}
for i = 1, nb do
  local v = seen[KEYS[7 + i]]
  if not v then
    v = redis.call('HMGET', KEYS[7 + i], 'u', 'r')
    v = {tonumber(v[1]) or 0, tonumber(v[2]) or 0}
  end
  out[#out + 1] = v[1]; out[#out + 1] = v[2]
end
return out
"""

# expire: charge at their maximum the open reservations created before `cutoff` and those held by
# the dead pids, keep them as expired (x:<rid>) for their late settle; bound the expired set to
# settled_max; forget settled and expired rids older than the retention.
#   KEYS  1 open zset, 2 expired zset, 3 settled zset, 4 owners hash
#   ARGV  1 now, 2 cutoff (created < cutoff expires), 3 forget before, 4 settled_max, 5 prefix,
#         6 expired record TTL seconds, 7 at most this many past-TTL rids per call, 8.. dead pids
#   ->    {n past-TTL rids looked at, rid1, key1, env1, max1, rid2, ...}
EXPIRE = PRELUDE + r"""
local now, P = tonumber(ARGV[1]), ARGV[5]
local todo, seen = {}, {}
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[7])
for _, rid in ipairs(old) do seen[rid] = true; todo[#todo + 1] = rid end
for i = 8, #ARGV do
  local ps = P .. 'p:' .. ARGV[i]
  for _, rid in ipairs(redis.call('SMEMBERS', ps)) do
    if not seen[rid] then seen[rid] = true; todo[#todo + 1] = rid end
  end
end
local out = {#old}
for _, rid in ipairs(todo) do
  local rk = P .. 'r:' .. rid
  local rec = redis.call('HMGET', rk, 'k', 'e', 'm', 't', 'p', 'b', 'tk')
  redis.call('ZREM', KEYS[1], rid)
  if rec[1] then
    local max, est = tonumber(rec[3]), tonumber(rec[4])
    each(rec[6], now, function(k, d) bump(k, 'r', -max, d, now); bump(k, 'u', max, d, now) end)
    each(rec[7], now, function(k, d) bump(k, 'r', -est, d, now); bump(k, 'u', est, d, now) end)
    disown(KEYS[4], P, rec[5], rid)
    local xk = P .. 'x:' .. rid
    redis.call('RENAME', rk, xk)
    redis.call('HSET', xk, 'x', ARGV[1])
    redis.call('EXPIRE', xk, ARGV[6])
    redis.call('ZADD', KEYS[2], ARGV[1], rid)
    out[#out + 1] = rid; out[#out + 1] = rec[1]; out[#out + 1] = rec[2]; out[#out + 1] = rec[3]
  end
end
for i = 8, #ARGV do       -- a dead pid's set may still name rids whose record is gone
  local ps = P .. 'p:' .. ARGV[i]
  redis.call('DEL', ps)
  redis.call('HDEL', KEYS[4], ARGV[i])
end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], over)
  for j = 1, #popped, 2 do redis.call('DEL', P .. 'x:' .. popped[j]) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[3])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])
for _, rid in ipairs(gone) do redis.call('DEL', P .. 'x:' .. rid) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])
return out
"""

# read: the counters named, in one consistent look.
#   KEYS  counters    ->  {u1, r1, u2, r2, ...} (0 for a counter that does not exist)
READ = r"""
local out = {}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'u', 'r')
  out[#out + 1] = tonumber(v[1]) or 0; out[#out + 1] = tonumber(v[2]) or 0
end
return out
"""

# rebuild, one chunk: entries of two types.
#  'r' a recent settled row: add its charge to the counters of its current periods, unless this
#      rebuild applied its rid already (the rebuilt set). A rid settled in Redis since the data was
#      lost (in the settled zset) had its cost and tokens charged by that settle, as an unknown rid,
#      but not its request: only its request counters are added. Rows settled at or after
#      `remember after` are remembered as settled (a duplicate settle counts once).
#  'a' the sum of the older rows on one counter (no settle since the loss can be one of them):
#      added unless this rebuild applied it already (its id in the rebuilt set).
# Only the holder of the rebuild lock may do it; the rebuilt set lets a rebuild that stopped half
# way (its node died, the lock expired) be done again by another node without counting twice.
#   KEYS  1 lock, 2 ready marker, 3 settled zset, 4 rebuilt set, 5.. counters
#   ARGV  1 lock token, 2 now, 3 lock TTL ms, 4 remember after, 5 settled_max, 6 rebuilt set TTL,
#         then per entry: type, rid or id, settled at, n, and n x (counter index in KEYS,
#         'q' for a request counter or 'm' for money and tokens, amount, deadline)
#   ->    entries applied, or -1 (the lock is not ours any more), -2 (the ledger is ready already)
REBUILD = PRELUDE + r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -2 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local now, keep = tonumber(ARGV[2]), tonumber(ARGV[4])
local i, applied = 7, 0
while i <= #ARGV do
  local kind, id, at, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  if redis.call('SISMEMBER', KEYS[4], id) == 0 then
    local only_requests = kind == 'r' and redis.call('ZSCORE', KEYS[3], id)
    for j = 0, n - 1 do
      if not only_requests or ARGV[i + 4 * j + 1] == 'q' then
        local k = KEYS[tonumber(ARGV[i + 4 * j])]
        redis.call('HINCRBY', k, 'u', ARGV[i + 4 * j + 2])
        touch(k, tonumber(ARGV[i + 4 * j + 3]), now)
      end
    end
    redis.call('SADD', KEYS[4], id)
    if kind == 'r' and not only_requests and tonumber(at) >= keep then redis.call('ZADD', KEYS[3], at, id) end
    applied = applied + 1
  end
  i = i + 4 * n
end
redis.call('EXPIRE', KEYS[4], ARGV[6])
local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[5])
if over > 0 then redis.call('ZPOPMIN', KEYS[3], over) end
return applied
"""

# rebuild done: the ledger admits requests again.
#   KEYS  1 lock, 2 ready marker, 3 rebuilt set    ARGV  1 lock token, 2 marker value
#   ->    1, or -1 (the lock is not ours any more)
REBUILT = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3], KEYS[1])
return 1
"""

SCRIPTS = {"reserve": RESERVE, "settle": SETTLE, "expire": EXPIRE, "read": READ, "rebuild": REBUILD,
           "rebuilt": REBUILT}
