-- Take a stream lease if nobody holds it. Every key is in the lease's slot.
-- KEYS: 1 lease, 2 last holder, 3 counter, 4 progress. ARGV: 1 replica id, 2 nonce, 3 TTL ms,
-- 4 '1' to take a lease nobody ever held (else such a lease answers 'fresh').
-- Returns {'acquired', token, progress}, {'held', pttl, ''} or {'fresh', '', ''}.
local pttl = redis.call('PTTL', KEYS[1])
if pttl ~= -2 then return {'held', tostring(pttl), ''} end
if ARGV[4] ~= '1' and redis.call('EXISTS', KEYS[2]) == 0 then return {'fresh', '', ''} end
-- Acquisition numbers only grow, even if the counter was lost with the data of its master:
-- at least the server's clock in milliseconds (the store refuses numbers below its marks).
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local n = math.max(tonumber(redis.call('GET', KEYS[3]) or '0') + 1, now_ms)
redis.call('SET', KEYS[3], string.format('%d', n))
local token = string.format('%d', n) .. ':' .. ARGV[1] .. ':' .. ARGV[2]
redis.call('SET', KEYS[1], token, 'PX', ARGV[3])
redis.call('SET', KEYS[2], token)
local progress = redis.call('GET', KEYS[4])
return {'acquired', token, progress or ''}
