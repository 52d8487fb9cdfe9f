-- Numbers a payload and publishes it in one step (Redis runs scripts one
-- at a time): `KEYS[1]` the counter, `KEYS[2]` the channel, `ARGV[1]` the
-- payload, `ARGV[2]` the floor: the number is above it even if Redis lost
-- the counter (a restart without persistence).
local seq = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[2])
if seq <= floor then seq = floor + 1 redis.call('SET', KEYS[1], seq) end
redis.call('PUBLISH', KEYS[2], seq .. ':' .. ARGV[1])
return seq
