-- `[n, u, ...]` for the entries of room `ARGV[1]` on live nodes.
local out, alive = {}, {}
for _, e in ipairs(redis.call('SMEMBERS', 'herald:members:' .. ARGV[1])) do
  local at = string.find(e, '\0', 1, true)
  local n = string.sub(e, 1, at - 1)
  if alive[n] == nil then alive[n] = redis.call('EXISTS', 'herald:alive:' .. n) == 1 end
  if alive[n] then out[#out + 1] = n out[#out + 1] = string.sub(e, at + 1) end
end
return out
