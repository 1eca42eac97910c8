-- Open a session's notice cursor (general notices from the current sequence on) if it has none, and move it up
-- to an acknowledged seq (never down, never past the last notice given).
-- KEYS: 1 cursor (`<upto> <general_from>`), 2 sequence. ARGV: 1 acknowledged seq or '', 2 ttl ms.
-- Answers {upto, general_from}.
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local current = redis.call('GET', KEYS[1])
local upto, from = 0, seq
if current then
  local u, f = string.match(current, '^(%d+) (%d+)$')
  upto, from = tonumber(u) or 0, tonumber(f) or seq
end
if ARGV[1] ~= '' then
  local acked = math.min(tonumber(ARGV[1]), seq)
  if acked > upto then upto = acked end
end
if (not current) or ARGV[1] ~= '' then
  redis.call('SET', KEYS[1], string.format('%d %d', upto, from), 'PX', ARGV[2])
end
return {upto, from}
