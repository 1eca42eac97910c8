-- Open a session's notice cursor if it has none — general notices from those sent at the session's issue time
-- on, or from the current sequence on when that is not known — and move it up to an acknowledged seq (never
-- down, never past the last notice given).
-- KEYS: 1 cursor (`<upto> <general_from>`), 2 sequence, 3 the general notices (by seq).
-- ARGV: 1 acknowledged seq or '', 2 ttl ms, 3 the session's issue time in ms or ''.
-- Answers {upto, general_from}.
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local current = redis.call('GET', KEYS[1])
local upto, from = 0, seq
if current then
  local u, f = string.match(current, '^(%d+) (%d+)$')
  upto, from = tonumber(u) or 0, tonumber(f) or seq
elseif ARGV[3] ~= '' then
  -- Just before the first general notice sent at or after the issue time (none: after every one so far). The
  -- first such rather than the newest older one: should the instances' clocks disagree, a notice is shown once
  -- too often rather than lost. The set is capped (`--shop-notices-cap`), and this runs once per session.
  local issued = tonumber(ARGV[3])
  local kept = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
  for i = 1, #kept, 2 do
    -- Members are written by the store: `{"id":"ntc_…","seq":n,"sent_at_ms":t,…}`.
    local sent = tonumber(string.match(kept[i], '"sent_at_ms":(%d+)'))
    if sent and sent >= issued then
      from = tonumber(kept[i + 1]) - 1
      break
    end
  end
end
if ARGV[1] ~= '' then
  local acked = math.min(tonumber(ARGV[1]), seq)
  if acked > upto then upto = acked end
end
if (not current) or ARGV[1] ~= '' then
  redis.call('SET', KEYS[1], string.format('%d %d', upto, from), 'PX', ARGV[2])
end
return {upto, from}
