-- KEYS the messages' lease keys; ARGV[1] the attempt; ARGV[2] the lifetime in ms
-- returns, for each key, 1 if the attempt holds it now, 0 if another attempt does
local taken = {}
for i, key in ipairs(KEYS) do
  taken[i] = redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
end
return taken
