-- A channel's numbering and history: `KEYS[1]` the counter, `KEYS[2]` the
-- history, `KEYS[3]` the epoch; `ARGV[1]` the number to read after,
-- `ARGV[2]` the most entries to read (0: none), `ARGV[3]` the epoch to take
-- if the channel has none yet. Answers `{latest, epoch, entries}`, each
-- entry `{id, {"m", payload}}`.
redis.call('SET', KEYS[3], ARGV[3], 'NX')
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
local epoch = redis.call('GET', KEYS[3])
local limit = tonumber(ARGV[2])
local entries = {}
if limit > 0 then
  -- After `ARGV[1]-0`, exclusive: built from the digits as given, so a
  -- number past Lua's exact integers still names the right entry.
  entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[1] .. '-0', '+', 'COUNT', limit)
end
return {latest, epoch, entries}
