-- Node `ARGV[1]` has (`ARGV[3]` = 1) or no longer has user `ARGV[2]` online.
local n, u = ARGV[1], ARGV[2]
local op = ARGV[3] == '1' and 'SADD' or 'SREM'
redis.call(op, 'herald:online:' .. u, n)
redis.call(op, 'herald:node:' .. n .. ':users', u)
return 0
