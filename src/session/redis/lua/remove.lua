-- Remove sessions of one bucket (eviction and expiry) unless they were active after `bound`
-- meanwhile. Returns how many were removed, or -1 when another replica holds the writer lease
-- (nothing was removed; the caller waits for it to step down).
-- KEYS: 1 recency, 2 chunk counts, 3 chunk total; on one server 4..6 the writer lease's keys;
-- then the sessions' hashes.
-- ARGV: 1 bound (a last-activity time), 2 'lt' (strictly before it) or 'le' (at or before it),
-- 3 this replica's id on one server, else empty, 4 the writer lease TTL, 5.. the session ids,
-- in the order of their hashes in KEYS.
local recency, chunk_counts, chunk_total = KEYS[1], KEYS[2], KEYS[3]
local bound, strict, writer = tonumber(ARGV[1]), ARGV[2] == 'lt', ARGV[3]
local first = 4
if writer ~= '' then
  if writer_refused(KEYS[4], KEYS[5], KEYS[6], writer, ARGV[4]) then return -1 end
  first = 7
end
local removed = 0
for i = first, #KEYS do
  local id = ARGV[i - first + 5]
  local score = tonumber(redis.call('ZSCORE', recency, id))
  if score and (score < bound or (not strict and score == bound)) then
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', recency, id)
    local chunks = redis.call('HGET', chunk_counts, id)
    if chunks then
      redis.call('DECRBY', chunk_total, chunks)
      redis.call('HDEL', chunk_counts, id)
    end
    removed = removed + 1
  end
end
return removed
