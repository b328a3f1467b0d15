-- Extend the lease if it is still ours (take it back if it vanished and nobody else took it
-- since); record progress. Returns 1 when we hold it, 0 when another replica does.
-- KEYS: 1 lease, 2 last holder, 3 progress. ARGV: 1 token, 2 TTL ms, 3 progress ('' none),
-- 4 progress TTL ms.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif holder then
  return 0
else
  local last = redis.call('GET', KEYS[2])
  if last and last ~= ARGV[1] then return 0 end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('SET', KEYS[2], ARGV[1])
end
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4]) end
return 1
