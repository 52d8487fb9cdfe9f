-- Every registered node with 1 (alive) or 0 (lapsed): `[n, 1, m, 0, ...]`.
local out = {}
for _, n in ipairs(redis.call('SMEMBERS', 'herald:nodes')) do
  out[#out + 1] = n
  out[#out + 1] = redis.call('EXISTS', 'herald:alive:' .. n)
end
return out
