-- The help chat's shared state, one operation per call (the layout is in keys.rs). Every instance's services
-- claim conversations here, so a conversation is one service's at a time whichever instance it is connected to.
-- ARGV: 1 op, 2 key prefix, 3 now (ms), then per op (below).
local op, p, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local services, pending, sent = p .. 'chat-services', p .. 'chat-pending', p .. 'chat-sent'

if op == 'post' then
  -- 4 cart, 5 id, 6 the message's JSON, 7 client id or '', 8 '1' if it waits for a service, 9 cap, 10 ttl ms.
  -- Answers {JSON, '1' new | '0' a retry of a stored message}.
  local cart, id, body, client, ttl = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[10]
  local conv, clients = p .. 'chat:' .. cart, p .. 'chat-client:' .. cart
  if client ~= '' then
    local known = redis.call('HGET', clients, client)
    if known then return {known, '0'} end
    redis.call('HSET', clients, client, body)
    redis.call('PEXPIRE', clients, ttl)
  end
  redis.call('RPUSH', conv, body)
  redis.call('LTRIM', conv, -tonumber(ARGV[9]), -1)
  redis.call('PEXPIRE', conv, ttl)
  if ARGV[8] == '1' then
    local waiting, msg = p .. 'chat-waiting:' .. cart, p .. 'chat-msg:' .. id
    redis.call('ZADD', pending, redis.call('INCR', p .. 'chat-seq'), id)
    redis.call('HSET', msg, 'cart', cart, 'body', body)
    redis.call('PEXPIRE', msg, ttl)
    redis.call('SADD', waiting, id)
    redis.call('PEXPIRE', waiting, ttl)
  end
  return {body, '1'}

elseif op == 'claim' then
  -- 4 service, 5 lease ms, 6 conversations to take, 7 waiting messages looked at, at most.
  -- Answers {cart, JSON, cart, JSON, …}: what is handed to this service now, oldest first.
  local svc, lease, take, scan = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  local owned = p .. 'chat-owned:' .. svc
  redis.call('ZADD', services, now + lease, svc)
  for _, cart in ipairs(redis.call('SMEMBERS', owned)) do
    local key = p .. 'chat-owner:' .. cart
    if redis.call('GET', key) == svc then redis.call('PEXPIRE', key, lease) else redis.call('SREM', owned, cart) end
  end
  local out, taken = {}, 0
  for _, id in ipairs(redis.call('ZRANGE', pending, 0, scan - 1)) do
    local msg = p .. 'chat-msg:' .. id
    local cart = redis.call('HGET', msg, 'cart')
    if not cart then
      -- Expired unanswered.
      redis.call('ZREM', pending, id)
      redis.call('HDEL', sent, id)
    else
      local key = p .. 'chat-owner:' .. cart
      local owner = redis.call('GET', key)
      if not owner and taken < take then
        redis.call('SET', key, svc, 'PX', lease)
        redis.call('SADD', owned, cart)
        owner, taken = svc, taken + 1
      end
      if owner == svc and redis.call('HGET', sent, id) ~= svc then
        redis.call('HSET', sent, id, svc)
        out[#out + 1] = cart
        out[#out + 1] = redis.call('HGET', msg, 'body')
      end
    end
  end
  redis.call('PEXPIRE', owned, lease)
  return out

elseif op == 'ack' then
  -- 4 service, 5 message id. Answers 1 if it was waiting.
  local svc, id = ARGV[4], ARGV[5]
  local msg = p .. 'chat-msg:' .. id
  local cart = redis.call('HGET', msg, 'cart')
  if not cart then return 0 end
  redis.call('DEL', msg)
  redis.call('ZREM', pending, id)
  redis.call('HDEL', sent, id)
  local waiting = p .. 'chat-waiting:' .. cart
  redis.call('SREM', waiting, id)
  if redis.call('SCARD', waiting) == 0 then
    local key = p .. 'chat-owner:' .. cart
    if redis.call('GET', key) == svc then
      redis.call('DEL', key)
      redis.call('SREM', p .. 'chat-owned:' .. svc, cart)
    end
  end
  return 1

elseif op == 'release' then
  -- 4 service.
  local svc = ARGV[4]
  local owned = p .. 'chat-owned:' .. svc
  for _, cart in ipairs(redis.call('SMEMBERS', owned)) do
    local key = p .. 'chat-owner:' .. cart
    if redis.call('GET', key) == svc then redis.call('DEL', key) end
    for _, id in ipairs(redis.call('SMEMBERS', p .. 'chat-waiting:' .. cart)) do
      if redis.call('HGET', sent, id) == svc then redis.call('HDEL', sent, id) end
    end
  end
  redis.call('DEL', owned)
  redis.call('ZREM', services, svc)
  return 1

elseif op == 'services' then
  redis.call('ZREMRANGEBYSCORE', services, '-inf', now)
  return redis.call('ZCARD', services)
end
return redis.error_reply('unknown chat op ' .. tostring(op))
