-- Replace this instance's report of its open connections (a hash: session -> connections, and '*' -> all of
-- them), keep it for a TTL, and count the distinct sessions of every live instance.
-- KEYS: 1 the registry of instances (sorted set, score = when its report expires), 2 this instance's hash.
-- ARGV: 1 now (ms), 2 ttl (ms), 3 this instance's hash key as registered, 4 its connections in all, then
-- session, connections pairs. The other instances' hashes are named by the registry (one Redis, not a cluster).
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], '*', ARGV[4])
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local seen, count = {}, 0
for _, report in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  for _, session in ipairs(redis.call('HKEYS', report)) do
    if session ~= '*' and not seen[session] then seen[session] = true; count = count + 1 end
  end
end
return count
