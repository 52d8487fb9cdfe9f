-- Removes node `ARGV[1]` and every entry it holds. With `ARGV[2]` =
-- `lapsed`, only a registered node whose heartbeat lapsed. Returns 1 when
-- it removed the node.
local n = ARGV[1]
if ARGV[2] == 'lapsed' then
  if redis.call('SISMEMBER', 'herald:nodes', n) == 0 then return 0 end
  if redis.call('EXISTS', 'herald:alive:' .. n) == 1 then return 0 end
end
local rooms, users = 'herald:node:' .. n .. ':rooms', 'herald:node:' .. n .. ':users'
for _, e in ipairs(redis.call('SMEMBERS', rooms)) do
  local at = string.find(e, '\0', 1, true)
  redis.call('SREM', 'herald:members:' .. string.sub(e, 1, at - 1), n .. '\0' .. string.sub(e, at + 1))
end
for _, u in ipairs(redis.call('SMEMBERS', users)) do redis.call('SREM', 'herald:online:' .. u, n) end
redis.call('DEL', rooms, users, 'herald:alive:' .. n)
redis.call('SREM', 'herald:nodes', n)
return 1
