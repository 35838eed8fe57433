-- May this campaign message be handed to its provider now? (outreach/campaign_control.py)
-- KEYS[1]: the campaign's halt flag (set while it is paused or cancelled)
-- KEYS[2]: hand-overs of the last minute, a sorted set scored by time in ms (the throttle)
-- KEYS[3]: hand-overs in flight, a sorted set scored by time in ms (what a pause waits for)
-- ARGV[1]: now in ms ('' for Redis time); ARGV[2]: throttle per minute (0: none);
-- ARGV[3]: the member (message id and attempt)
-- Returns {1, now} when it may go (recorded in flight and in the minute), {0, 0} when the
-- campaign is halted, {2, until_ms} when the minute's hand-overs are used up.
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, 0}
end
local limit = tonumber(ARGV[2])
if limit > 0 then
  -- a hand-over exactly a minute old still counts: at most `limit` in any 60 s
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - 60000))
  if redis.call('ZCARD', KEYS[2]) >= limit then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {2, tonumber(oldest[2]) + 60001}
  end
  redis.call('ZADD', KEYS[2], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[2], 120000)
end
redis.call('ZADD', KEYS[3], now, ARGV[3])
redis.call('PEXPIRE', KEYS[3], 3600000)
return {1, now}
