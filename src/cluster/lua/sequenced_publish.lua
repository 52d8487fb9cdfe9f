-- Numbers a payload, keeps it in the channel's history and publishes it,
-- in one step (Redis runs scripts one at a time), so the history never
-- disagrees with the counter. `KEYS[1]` the counter, `KEYS[2]` the channel,
-- `KEYS[3]` the history (a stream whose entry ids are the numbers),
-- `KEYS[4]` the epoch; `ARGV[1]` the payload, `ARGV[2]` the floor: the
-- number is above it even if Redis lost the counter (a restart without
-- persistence), `ARGV[3]` the messages to keep (0: none), `ARGV[4]` how
-- long to keep them after this one (ms), `ARGV[5]` the epoch to take if
-- the counter has none yet, or the one it takes when the floor is above
-- the counter (numbers were given that it did not give: a new epoch).
local seq = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[2])
if seq <= floor then
  seq = floor + 1
  redis.call('SET', KEYS[1], seq)
  redis.call('SET', KEYS[4], ARGV[5])
else
  redis.call('SET', KEYS[4], ARGV[5], 'NX')
end
local size = tonumber(ARGV[3])
if size > 0 then
  -- An entry id below the stream's last (its counter was reset by hand)
  -- is refused: the message then has no history, which a replay sees as
  -- a hole and does not paper over.
  redis.pcall('XADD', KEYS[3], 'MAXLEN', size, seq .. '-0', 'm', ARGV[1])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
redis.call('PUBLISH', KEYS[2], seq .. ':' .. ARGV[1])
return seq
