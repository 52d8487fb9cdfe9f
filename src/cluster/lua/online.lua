-- 1 or 0 for each user in `ARGV`: online on a live node.
local out, alive = {}, {}
for i, u in ipairs(ARGV) do
  out[i] = 0
  for _, n in ipairs(redis.call('SMEMBERS', 'herald:online:' .. u)) do
    if alive[n] == nil then alive[n] = redis.call('EXISTS', 'herald:alive:' .. n) == 1 end
    if alive[n] then out[i] = 1 break end
  end
end
return out
