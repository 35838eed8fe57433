local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local cost = tonumber(ARGV[2]) * interval
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local wait = tat - now
if wait > max_wait then
  return {0, wait, tat}
end
local new_tat = tat + cost
redis.call('SET', KEYS[1], string.format('%d', new_tat),
            'PX', math.floor((new_tat - now) / 1000) + 1000)
return {1, wait, tat}
