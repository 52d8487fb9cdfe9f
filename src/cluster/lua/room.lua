-- `ARGV[1]` joins (`ARGV[4]` = 1) or leaves room `ARGV[2]` as user `ARGV[3]`.
local n, r, u = ARGV[1], ARGV[2], ARGV[3]
local op = ARGV[4] == '1' and 'SADD' or 'SREM'
redis.call(op, 'herald:members:' .. r, n .. '\0' .. u)
redis.call(op, 'herald:node:' .. n .. ':rooms', r .. '\0' .. u)
return 0
