-- Take, keep or give up the writer lease (see writer_lease.rs).
-- KEYS: 1 the lease (the holder's replica id, PX = the lease TTL), 2 the wanted mark,
-- 3 recent writers (zset: replica id -> last write, Redis time in ms).
-- ARGV: 1 'acquire' | 'renew' | 'release', 2 this replica's id, 3 lease TTL (ms),
-- 4 the quiet window (ms): the lease is taken only when nobody else wrote within it.
-- Returns 'acquired', 'taken' (another holds it), 'shared' (others wrote lately),
-- 'held' (renewed), 'contended' (others want to write: step down), 'lost', 'released'.
local lease, wanted, writers = KEYS[1], KEYS[2], KEYS[3]
local op, me, ttl_ms, quiet_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local holder = redis.call('GET', lease)
if op == 'release' then
  if holder == me then redis.call('DEL', lease) end
  return 'released'
end
local now = redis.call('TIME')
local since = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - quiet_ms
local function others_wrote()
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', writers, since, '+inf')) do
    if id ~= me then return true end
  end
  return false
end
if op == 'renew' then
  if holder ~= me then return 'lost' end
  if others_wrote() then return 'contended' end
  redis.call('PEXPIRE', lease, ttl_ms)
  return 'held'
end
if holder and holder ~= me then return 'taken' end
redis.call('ZREMRANGEBYSCORE', writers, '-inf', '(' .. since)
if others_wrote() then return 'shared' end
redis.call('SET', lease, me, 'PX', ttl_ms)
return 'acquired'
