-- Node `ARGV[1]` has exactly the users `ARGV[2..]` online.
local n = ARGV[1]
local users = 'herald:node:' .. n .. ':users'
for _, u in ipairs(redis.call('SMEMBERS', users)) do redis.call('SREM', 'herald:online:' .. u, n) end
redis.call('DEL', users)
for i = 2, #ARGV do
  redis.call('SADD', 'herald:online:' .. ARGV[i], n)
  redis.call('SADD', users, ARGV[i])
end
return 0
