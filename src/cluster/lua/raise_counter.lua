-- Raises the counter `KEYS[1]` to at least `ARGV[1]`. Numbers were then
-- handed out that the counter did not give (it was lost, or a node
-- numbered on its own while Redis was away), and so with `ARGV[3]` = 1
-- (a node knows it did): the numbering is not one unbroken sequence any
-- more, and the epoch `KEYS[2]` becomes `ARGV[2]`.
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
local renew = ARGV[3] == '1'
if now < floor then
  redis.call('SET', KEYS[1], floor)
  renew = true
end
if renew then redis.call('SET', KEYS[2], ARGV[2]) end
return 0
