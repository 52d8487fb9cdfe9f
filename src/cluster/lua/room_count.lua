-- How many distinct users room `ARGV[1]` has on live nodes (the count alone,
-- for rooms that list no one).
local seen, alive, n = {}, {}, 0
for _, e in ipairs(redis.call('SMEMBERS', 'herald:members:' .. ARGV[1])) do
  local at = string.find(e, '\0', 1, true)
  local node = string.sub(e, 1, at - 1)
  if alive[node] == nil then alive[node] = redis.call('EXISTS', 'herald:alive:' .. node) == 1 end
  local user = string.sub(e, at + 1)
  if alive[node] and not seen[user] then
    seen[user] = true
    n = n + 1
  end
end
return n
