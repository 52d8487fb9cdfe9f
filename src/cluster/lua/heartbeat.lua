-- `SET herald:alive:{n} PX ttl`, then register n; returns 1 if n was not registered.
redis.call('SET', 'herald:alive:' .. ARGV[1], '1', 'PX', ARGV[2])
return redis.call('SADD', 'herald:nodes', ARGV[1])
