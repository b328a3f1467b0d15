-- Raise one bucket's fence mark for a stream lease to a new acquisition number (never lower).
-- KEYS: 1 the bucket's fence marks. ARGV: 1 lease key, 2 acquisition number.
local mark = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > mark then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
