-- Drops node `ARGV[1]`'s entries in every room but `ARGV[2..]`; returns
-- the dropped `r\0u` entries.
local n = ARGV[1]
local rooms, keep, dropped = 'herald:node:' .. n .. ':rooms', {}, {}
for i = 2, #ARGV do keep[ARGV[i]] = true end
for _, e in ipairs(redis.call('SMEMBERS', rooms)) do
  local at = string.find(e, '\0', 1, true)
  local r = string.sub(e, 1, at - 1)
  if not keep[r] then
    redis.call('SREM', 'herald:members:' .. r, n .. '\0' .. string.sub(e, at + 1))
    redis.call('SREM', rooms, e)
    dropped[#dropped + 1] = e
  end
end
return dropped
