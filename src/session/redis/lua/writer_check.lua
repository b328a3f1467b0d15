-- The writer lease's check, run first by every script that changes a session on one server
-- (see writer_lease.rs). While another replica holds the lease it refuses, and marks that a
-- replica wants to write, so that the holder (which tracks that mark) steps down at once.
-- Without a holder it records this replica as a recent writer, so nobody takes the lease
-- while others write.
local function writer_refused(lease, wanted, writers, me, ttl_ms)
  local holder = redis.call('GET', lease)
  if holder == me then return false end
  local now = redis.call('TIME')
  redis.call('ZADD', writers, tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000), me)
  if holder then
    redis.call('SET', wanted, me, 'PX', ttl_ms)
    return true
  end
  return false
end
