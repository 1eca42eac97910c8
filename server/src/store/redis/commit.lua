-- Check, then write: the one script every change commits with (see commit.rs).
if ARGV[1] ~= '' then
  local earlier = redis.call('GET', ARGV[1])
  if earlier then return {'replay', earlier} end
end
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[2]) then return {'conflict'} end
if ARGV[3] ~= '' and tonumber(redis.call('HGET', ARGV[3], 'v') or '0') ~= tonumber(ARGV[4]) then
  return {'conflict'}
end
local i = 5
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'hset' then redis.call('HSET', ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]); i = i + 4
  elseif op == 'set' then redis.call('SET', ARGV[i + 1], ARGV[i + 2]); i = i + 3
  elseif op == 'setex' then redis.call('SET', ARGV[i + 1], ARGV[i + 2], 'EX', ARGV[i + 3]); i = i + 4
  elseif op == 'publish' then redis.call('PUBLISH', ARGV[i + 1], ARGV[i + 2]); i = i + 3
  else return redis.error_reply('cartwheel commit: unknown operation ' .. tostring(op)) end
end
return {'ok'}
