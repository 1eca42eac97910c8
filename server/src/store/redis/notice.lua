-- Store one notice, numbered: the sequence and the write are one step, so no reader sees seq n+1 without n.
-- KEYS: 1 epoch, 2 sequence, 3 the audience's sorted set.
-- ARGV: 1 expected epoch, 2 the member's JSON before its seq, 3 after it, 4 cap, 5 ttl ms.
-- Answers the seq, or -1 when the store's epoch is not the one expected.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[3], seq, ARGV[2] .. seq .. ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[4]) + 1))
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return seq
