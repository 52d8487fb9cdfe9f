-- Node `ARGV[1]` has exactly the users `ARGV[3..]` in room `ARGV[2]`.
-- Returns `{removed, added}` users.
local n, r = ARGV[1], ARGV[2]
local members, rooms = 'herald:members:' .. r, 'herald:node:' .. n .. ':rooms'
local new, removed, added = {}, {}, {}
for i = 3, #ARGV do new[ARGV[i]] = true end
for _, e in ipairs(redis.call('SMEMBERS', rooms)) do
  local at = string.find(e, '\0', 1, true)
  if string.sub(e, 1, at - 1) == r then
    local u = string.sub(e, at + 1)
    if new[u] then new[u] = false else
      redis.call('SREM', members, n .. '\0' .. u)
      redis.call('SREM', rooms, e)
      removed[#removed + 1] = u
    end
  end
end
for i = 3, #ARGV do
  local u = ARGV[i]
  if new[u] then
    new[u] = false
    redis.call('SADD', members, n .. '\0' .. u)
    redis.call('SADD', rooms, r .. '\0' .. u)
    added[#added + 1] = u
  end
end
return {removed, added}
