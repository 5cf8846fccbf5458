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
* A counter is a hash. Budgets (micro-dollars) and token limits: u = used, t = used + reserved
  (the figure every check compares with the limit, so a reserve is one HINCRBY per counter);
  request limits: u = requests counted. A counter reference inside a record is "key deadline",
  and a counter whose deadline has passed is no longer touched (it is invisible: its period ended
  long ago). A counter gets its EXPIRE (deadline - now) when a script creates it, not on every
  change.
* Every redis.call costs about a microsecond on top of the command (Redis encodes the reply and
  Lua parses it back), so the scripts make as few as they can: a reserve increments first and
  undoes its increments when a counter refuses, instead of reading every counter before.

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
"""

# reserve(rid): every counter takes the request, or none does.
#   KEYS  1 ready marker, 2 reservation r:<rid>, 3 open zset, 4 pids set, 5 pid set p:<pid>
#         (any key when no pid), 6 settled zset, 7.. counters: nb budgets, nr request limits,
#         nt token limits
#   ARGV  1 now, 2 rid, 3 max micros, 4 est tokens, 5 pid ('' none), 6 key id, 7 env,
#         8 nb, 9 nr, 10 nt, 11 record TTL seconds, then per counter i: 10+2i limit, 11+2i deadline
#   ->    {'LOST'}                  the ledger's data is gone (no ready marker): rebuild first
#         {'DUP'}                   an open reservation has this rid
#         {'SETTLED'}               this rid was settled (or released) already: a reserve that
#                                   arrives after its own release (a reply that never came) must
#                                   not hold a reservation no one will settle
#         {'BUDGET'|'LIMIT', i, v}  counter i refuses (the first in order), v its t (budget,
#                                   tokens) or u (requests) before; nothing changed
#         {'OK', v1, v2, ...}       every counter's t (budget, tokens) or u (requests) after
RESERVE = PRELUDE + r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {'LOST'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'DUP'} end
if redis.call('ZSCORE', KEYS[6], ARGV[2]) then return {'SETTLED'} end
local now = tonumber(ARGV[1])
local nb, nr, nt = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local n = nb + nr + nt
local field, inc = {}, {}
for i = 1, n do
  if i <= nb then field[i], inc[i] = 't', tonumber(ARGV[3])
  elseif i <= nb + nr then field[i], inc[i] = 'u', 1
  else field[i], inc[i] = 't', tonumber(ARGV[4]) end
end
local out, bl, tl = {'OK'}, {}, {}
for i = 1, n do
  local k, d = KEYS[6 + i], ARGV[11 + 2 * i]
  local v = redis.call('HINCRBY', k, field[i], I(inc[i]))
  if v == inc[i] then touch(k, tonumber(d), now) end
  if v > tonumber(ARGV[10 + 2 * i]) then
    for j = 1, i do
      if inc[j] ~= 0 then redis.call('HINCRBY', KEYS[6 + j], field[j], I(-inc[j])) end
    end
    if i <= nb then return {'BUDGET', i, v - inc[i]} end
    return {'LIMIT', i, v - inc[i]}
  end
  out[#out + 1] = v
  if i <= nb then bl[#bl + 1] = k; bl[#bl + 1] = d
  elseif i > nb + nr then tl[#tl + 1] = k; tl[#tl + 1] = d end
end
local rid, pid = ARGV[2], ARGV[5]
redis.call('HSET', KEYS[2], 'k', ARGV[6], 'e', ARGV[7], 'm', ARGV[3], 't', ARGV[4], 'c', ARGV[1],
           'p', pid, 'b', table.concat(bl, ' '), 'tk', table.concat(tl, ' '))
redis.call('EXPIRE', KEYS[2], ARGV[11])
redis.call('ZADD', KEYS[3], ARGV[1], rid)
if pid ~= '' then
  redis.call('SADD', KEYS[5], rid)
  redis.call('SADD', KEYS[4], pid)
end
return out
"""

# settle(rid): the reservation's counters get the real cost instead of the maximum; a rid settled
# before counts once; an expired rid (charged its maximum) is corrected to the real cost; an
# unknown rid charges the caller's key and env in the current periods (the counters passed).
#   KEYS  1 r:<rid>, 2 x:<rid>, 3 open zset, 4 expired zset, 5 settled zset, 6 savings hash,
#         7.. the caller's current counters: nb budgets then nt token limits
#   ARGV  1 now, 2 rid, 3 cost micros, 4 tokens, 5 saved micros, 6 savings field,
#         7 settled_max, 8 nb, 9 nt, 10 prefix, then per counter i: 10+i deadline
#   ->    {status, key, env, t1, t2, ...}  status 'S' settled an open reservation, 'C' corrected
#         an expired one, 'U' charged an unknown rid, 'D' duplicate (nothing charged); key and env
#         are the reservation's ('' for U and D); then t of the caller's budget counters after it.
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
local seen = {}     -- counter -> t as this settle left it, to answer without reading it again
local function charge(k, d, dt, du)
  local t = bump(k, 't', dt, d, now)
  bump(k, 'u', du, d, now)
  if t then seen[k] = t end
end
local status, key, env = 'D', '', ''
local rec = redis.call('HMGET', KEYS[1], 'k', 'e', 'm', 't', 'p', 'b', 'tk')
if rec[1] then
  local max, est = tonumber(rec[3]), tonumber(rec[4])
  each(rec[6], now, function(k, d) charge(k, d, cost - max, cost) end)
  each(rec[7], now, function(k, d) charge(k, d, tok - est, tok) end)
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[3], rid)
  if rec[5] ~= '' then redis.call('SREM', P .. 'p:' .. rec[5], rid) end
  remember()
  status, key, env = 'S', rec[1], rec[2]
elseif was then
  status = 'D'
else
  local x = redis.call('HMGET', KEYS[2], 'k', 'e', 'm', 't', 'b', 'tk')
  if x[1] then
    local dm, dt = cost - tonumber(x[3]), tok - tonumber(x[4])
    each(x[5], now, function(k, d) charge(k, d, dm, dm) end)
    each(x[6], now, function(k, d) charge(k, d, dt, dt) end)
    redis.call('DEL', KEYS[2])
    redis.call('ZREM', KEYS[4], rid)
    remember()
    status, key, env = 'C', x[1], x[2]
  else
    for i = 1, nb + nt do
      local amount = i <= nb and cost or tok
      charge(KEYS[6 + i], tonumber(ARGV[10 + i]), amount, amount)
    end
    remember()
    status = 'U'
  end
end
local out = {status, key, env}
for i = 1, nb do
  local k = KEYS[6 + i]
  out[#out + 1] = seen[k] or tonumber(redis.call('HGET', k, 't')) or 0
end
return out
"""

# expire: charge at their maximum the open reservations created before `cutoff` and those held by
# the dead pids, keep them as expired (x:<rid>) for their late settle; bound the expired set to
# settled_max; forget settled and expired rids older than the retention.
#   KEYS  1 open zset, 2 expired zset, 3 settled zset, 4 pids set
#   ARGV  1 now, 2 cutoff (created < cutoff expires), 3 forget before, 4 settled_max, 5 prefix,
#         6 expired record TTL seconds, 7 at most this many past-TTL rids per call, 8.. dead pids
#   ->    {n past-TTL rids looked at, rid1, key1, env1, max1, rid2, ...}
EXPIRE = PRELUDE + r"""
local now, P = tonumber(ARGV[1]), ARGV[5]
local todo, seen = {}, {}
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[7])
for _, rid in ipairs(old) do seen[rid] = true; todo[#todo + 1] = rid end
for i = 8, #ARGV do
  for _, rid in ipairs(redis.call('SMEMBERS', P .. 'p:' .. ARGV[i])) do
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
    each(rec[6], now, function(k, d) bump(k, 'u', max, d, now) end)     -- t already holds it
    each(rec[7], now, function(k, d) bump(k, 'u', est, d, now) end)
    if rec[5] ~= '' then redis.call('SREM', P .. 'p:' .. rec[5], rid) end
    local xk = P .. 'x:' .. rid
    redis.call('RENAME', rk, xk)
    redis.call('HSET', xk, 'x', ARGV[1])
    redis.call('EXPIRE', xk, ARGV[6])
    redis.call('ZADD', KEYS[2], ARGV[1], rid)
    out[#out + 1] = rid; out[#out + 1] = rec[1]; out[#out + 1] = rec[2]; out[#out + 1] = rec[3]
  end
end
for i = 8, #ARGV do       -- a dead pid's set may still name rids whose record is gone
  redis.call('DEL', P .. 'p:' .. ARGV[i])
  redis.call('SREM', KEYS[4], ARGV[i])
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

# owners: the pids holding open reservations (a pid whose set has emptied is dropped).
#   KEYS  1 pids set    ARGV  1 prefix    ->  {pid, ...}
OWNERS = r"""
local out = {}
for _, pid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('SCARD', ARGV[1] .. 'p:' .. pid) > 0 then out[#out + 1] = pid
  else redis.call('SREM', KEYS[1], pid) end
end
return out
"""

# read: the counters named, in one consistent look.
#   KEYS  counters    ->  {u1, r1, u2, r2, ...} (used, reserved; 0 for a counter that does not exist)
READ = r"""
local out = {}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'u', 't')
  local u = tonumber(v[1]) or 0
  out[#out + 1] = u; out[#out + 1] = (tonumber(v[2]) or u) - u
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
      local flag = ARGV[i + 4 * j + 1]
      if not only_requests or flag == 'q' then
        local k = KEYS[tonumber(ARGV[i + 4 * j])]
        redis.call('HINCRBY', k, 'u', ARGV[i + 4 * j + 2])
        if flag == 'm' then redis.call('HINCRBY', k, 't', ARGV[i + 4 * j + 2]) end
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

SCRIPTS = {"reserve": RESERVE, "settle": SETTLE, "expire": EXPIRE, "owners": OWNERS, "read": READ,
           "rebuild": REBUILD, "rebuilt": REBUILT}
