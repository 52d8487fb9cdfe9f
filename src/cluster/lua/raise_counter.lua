-- Raises the counter `KEYS[1]` to at least `ARGV[1]`.
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if now < floor then redis.call('SET', KEYS[1], floor) end
return 0
