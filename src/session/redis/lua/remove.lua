-- Remove sessions of one bucket (eviction and expiry) unless they were active after `bound`
-- meanwhile. Returns how many were removed.
-- KEYS: 1 recency, 2 chunk counts, 3 chunk total, 4.. the sessions' hashes.
-- ARGV: 1 bound (a last-activity time), 2 'lt' (strictly before it) or 'le' (at or before it),
-- 3.. the session ids, in the order of KEYS[4..].
local recency, chunk_counts, chunk_total = KEYS[1], KEYS[2], KEYS[3]
local bound, strict = tonumber(ARGV[1]), ARGV[2] == 'lt'
local removed = 0
for i = 4, #KEYS do
  local id = ARGV[i - 1]
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
