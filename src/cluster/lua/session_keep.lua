-- Keeps Socket.IO session ARGV[1]'s record ARGV[2] for ARGV[3] ms (what a
-- client that comes back with that pid, on any node, recovers from).
redis.call('SET', 'herald:sio:' .. ARGV[1], ARGV[2], 'PX', ARGV[3])
return 1
