-- Takes Socket.IO session ARGV[1]'s record: returns it and removes it, so
-- one reconnect recovers it; false when there is none.
local key = 'herald:sio:' .. ARGV[1]
local record = redis.call('GET', key)
if record then
  redis.call('DEL', key)
end
return record
