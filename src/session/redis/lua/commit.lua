-- The compare-and-set commit of one session write. Every key is in the session's bucket slot.
-- Returns {1} written, {0} the session changed since it was read (the caller starts over),
-- {-1} the write's stream fence is older than one this bucket has seen (a newer leader),
-- {-2} another replica holds the writer lease (the caller waits for it to step down).
-- Argument order: see CommitArgs in scripts.rs. On one server KEYS[6..8] are the writer
-- lease's keys and ARGV[13], ARGV[14] this replica's id and the lease TTL; on a cluster there
-- is no writer lease and ARGV[13] is empty.
local session, recency, chunk_counts, chunk_total, fences = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local expected, revision, incarnation, blob, ttl_ms, last_seen, id, chunks, lease, fence, index_keys, fresh =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local writer = ARGV[13]

if writer ~= '' and writer_refused(KEYS[6], KEYS[7], KEYS[8], writer, ARGV[14]) then return {-2} end

local current = redis.call('HGET', session, 'r')
if expected == '' then
  if current then return {0} end
elseif current ~= expected then
  return {0}
end

if lease ~= '' then
  -- Fencing: a lease acquisition raises this mark in every bucket, so once a newer leader
  -- exists, an older one's writes stop here however late they arrive.
  local number = tonumber(fence)
  local mark = tonumber(redis.call('HGET', fences, lease) or '0')
  if number < mark then return {-1} end
  if number > mark then redis.call('HSET', fences, lease, fence) end
end

if fresh == '1' then redis.call('DEL', session) end
redis.call('HSET', session, 'd', blob, 'r', revision, 'n', incarnation, 't', last_seen, 'k', index_keys)
if ttl_ms ~= '' then redis.call('PEXPIRE', session, ttl_ms) end
redis.call('ZADD', recency, last_seen, id)
local before = tonumber(redis.call('HGET', chunk_counts, id) or '0')
local after = tonumber(chunks)
if before ~= after or expected == '' then
  redis.call('HSET', chunk_counts, id, after)
  redis.call('INCRBY', chunk_total, after - before)
end
return {1}
