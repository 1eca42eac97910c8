-- Check, then write: the one script every change commits with (see commit.rs).
-- KEYS: 1 epoch, 2 products hash.
if ARGV[1] ~= '' then
  local earlier = redis.call('GET', ARGV[1])
  if earlier then return {'replay', earlier} end
end
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return {'epoch'} end
if ARGV[3] ~= '' and tonumber(redis.call('HGET', ARGV[3], 'v') or '0') ~= tonumber(ARGV[4]) then
  return {'conflict'}
end
local function parse(state)
  local stock, price, revision = string.match(state, '^(%d+) (%d+) (%d+)$')
  return tonumber(stock), price, tonumber(revision)
end
-- Product guards: 'rev' (unchanged since read) or 'take' (price as read, enough stock: decremented here, so
-- checkouts of one product do not conflict with each other).
local taken, answer = {}, {'ok'}
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  local id, kind, a, b, c = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local state = redis.call('HGET', KEYS[2], id)
  if kind == 'rev' then
    local revision = tonumber(b)
    if state then revision = select(3, parse(state)) end
    if revision ~= tonumber(a) then return {'conflict'} end
  else
    local stock, price, revision = parse(state or c)
    if stock == nil or price ~= b or stock < tonumber(a) then return {'conflict'} end
    local after = (stock - tonumber(a)) .. ' ' .. price .. ' ' .. (revision + 1)
    taken[id] = {stock - tonumber(a), revision + 1, after}
    table.insert(answer, id)
    table.insert(answer, after)
  end
  i = i + 5
end
for id, t in pairs(taken) do redis.call('HSET', KEYS[2], id, t[3]) end
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'hset' then redis.call('HSET', ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]); i = i + 4
  elseif op == 'set' then redis.call('SET', ARGV[i + 1], ARGV[i + 2]); i = i + 3
  elseif op == 'zadd' then redis.call('ZADD', ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]); i = i + 4
  elseif op == 'zrem' then redis.call('ZREM', ARGV[i + 1], ARGV[i + 2]); i = i + 3
  elseif op == 'expire' then redis.call('EXPIRE', ARGV[i + 1], ARGV[i + 2]); i = i + 3
  elseif op == 'setex' then redis.call('SET', ARGV[i + 1], ARGV[i + 2], 'EX', ARGV[i + 3]); i = i + 4
  elseif op == 'setex-capped' then
    -- A client's idempotency record, indexed per session by time; beyond the cap the oldest records go.
    local key, ttl, index, cap = ARGV[i + 1], ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5])
    redis.call('SET', key, ARGV[i + 2], 'EX', ttl)
    local now = redis.call('TIME')
    redis.call('ZADD', index, tonumber(now[1]) * 1000000 + tonumber(now[2]), key)
    redis.call('EXPIRE', index, ttl)
    local over = redis.call('ZCARD', index) - cap
    if over > 0 then
      for _, old in ipairs(redis.call('ZRANGE', index, 0, over - 1)) do redis.call('DEL', old) end
      redis.call('ZREMRANGEBYRANK', index, 0, over - 1)
    end
    i = i + 6
  elseif op == 'publish' then redis.call('PUBLISH', ARGV[i + 1], ARGV[i + 2]); i = i + 3
  elseif op == 'publish-taken' then
    -- A product update written before its stock and revision were known here: fill them in.
    local t = taken[ARGV[i + 3]]
    local frame = ARGV[i + 2]
    if t then
      frame = string.gsub(frame, '"stock":%d+', '"stock":' .. t[1], 1)
      frame = string.gsub(frame, '"revision":%d+', '"revision":' .. t[2], 1)
    end
    redis.call('PUBLISH', ARGV[i + 1], frame); i = i + 4
  else return redis.error_reply('cartwheel commit: unknown operation ' .. tostring(op)) end
end
return answer
