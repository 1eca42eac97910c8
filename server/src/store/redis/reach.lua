-- The connections the other live instances reported, in all ('*') or of one session.
-- KEYS: 1 the registry of instances. ARGV: 1 now (ms), 2 this instance's hash key (left out), 3 session or '*'.
local total = 0
for _, report in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')) do
  if report ~= ARGV[2] then total = total + tonumber(redis.call('HGET', report, ARGV[3]) or '0') end
end
return total
