-- Replace this instance's online sessions, keep them for a TTL, and count the distinct sessions of every live
-- instance. KEYS: 1 the registry of instances (sorted set, score = when its report expires), 2 this instance's
-- set. ARGV: 1 now (ms), 2 ttl (ms), 3 this instance's set key as registered, then the sessions.
-- The other instances' sets are named by the registry (one Redis, not a cluster).
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('DEL', KEYS[2])
for i = 4, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
if #ARGV >= 4 then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
if #live == 0 then return 0 end
if #live == 1 then return redis.call('SCARD', live[1]) end
local seen, count = {}, 0
for _, set in ipairs(live) do
  for _, session in ipairs(redis.call('SMEMBERS', set)) do
    if not seen[session] then seen[session] = true; count = count + 1 end
  end
end
return count
