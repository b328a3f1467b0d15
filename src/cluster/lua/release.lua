-- Delete the lease only if it is still ours, recording the final progress.
-- KEYS: 1 lease, 2 progress. ARGV: 1 token, 2 progress ('' none), 3 progress TTL ms.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
return redis.call('DEL', KEYS[1])
