-- KEYS[1]  the borrower's set, scored in ms: "<channel>:<message id>@<attempt>" for a
--          reservation and the attempt holding it, "<channel>:<message id>" for one rebuilt
--          from the log (or made without an attempt); plus the marker "!loaded" (score -1)
--          once it holds the message log's reservations
-- KEYS[2]  optional: the message's lease, naming the attempt working the message now
-- ARGV[1]  now in ms, or "" for the Redis server clock
-- ARGV[2]  the message's channel; ARGV[3] its id; ARGV[4] key lifetime in ms
-- ARGV[5]  the rules: "name scope limit window_ms" groups, space-separated (scope is
--          sms, email or any); one string, as packing many arguments costs more than parsing
-- ARGV[6]  the attempt asking, or "" for none
-- ARGV[7]  "seed", then (score, member) pairs to load if the marker is missing; or "noseed"
-- returns  {0, now} not loaded: call again with the log | {1, now} reserved |
--          {2, now, rule, until} refused until `until` ms, when `rule` frees a slot |
--          {3, now} another attempt holds this message: nothing changed
local key = KEYS[1]
local lease = KEYS[2]
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
local channel = ARGV[2]
local message = channel .. ':' .. ARGV[3]
local ttl = tonumber(ARGV[4])
local rules = {}
for name, scope, limit, window in string.gmatch(ARGV[5], '(%S+) (%S+) (%d+) (%d+)') do
  rules[#rules + 1] = {name, scope, tonumber(limit), tonumber(window)}
end
local attempt = ARGV[6]
local member = message
if attempt ~= '' then member = message .. '@' .. attempt end

-- with a lease, only the attempt holding it may reserve for the message
if lease and redis.call('GET', lease) ~= attempt then
  return {3, now}
end

if not redis.call('ZSCORE', key, '!loaded') then
  if ARGV[7] ~= 'seed' then
    return {0, now}
  end
  for i = 8, #ARGV, 2 do
    -- NX: a reservation already present keeps its own (Redis-clock) time
    redis.call('ZADD', key, 'NX', ARGV[i], ARGV[i + 1])
  end
  redis.call('ZADD', key, -1, '!loaded')
  redis.call('PEXPIRE', key, ttl)
end

local longest = 0
for _, rule in ipairs(rules) do
  if rule[4] > longest then longest = rule[4] end
end
redis.call('ZREMRANGEBYSCORE', key, 0, '(' .. (now - longest))
-- later entries count too: with clocks out of order, they may share a window with now
local entries = redis.call('ZRANGEBYSCORE', key, '(' .. (now - longest), '+inf', 'WITHSCORES')

-- This message's own entries are not counted against it. One rebuilt from the log, or made
-- by this attempt, is this attempt's; one made by another attempt is this attempt's only
-- when it holds the lease (the other lost it). Without a lease, another attempt's
-- reservation is neither shared nor taken.
local earlier, others = {}, {}
for i = 1, #entries, 2 do
  local entry, score = entries[i], tonumber(entries[i + 1])
  local of_message, holder = string.match(entry, '^([^@]*)@?(.*)$')
  if of_message ~= message then
    others[#others + 1] = {entry, score}
  elseif holder == '' or holder == attempt or lease then
    earlier[#earlier + 1] = {entry, score}
  else
    return {3, now}
  end
end

local refused_rule, refused_until = false, 0
for _, rule in ipairs(rules) do
  local name, scope, limit, window = rule[1], rule[2], rule[3], rule[4]
  if scope == 'any' or scope == channel then
    local prefix = scope .. ':'
    local scores = {}
    for _, other in ipairs(others) do
      local entry, score = other[1], other[2]
      if score > now - window and (scope == 'any' or string.sub(entry, 1, #prefix) == prefix) then
        scores[#scores + 1] = score
      end
    end
    if #scores >= limit then
      -- slots free as the oldest entries leave the window
      local frees_at = scores[#scores - limit + 1] + window
      if not refused_rule or frees_at > refused_until then
        refused_rule, refused_until = name, frees_at
      end
    end
  end
end
if refused_rule then
  -- a refused message holds no slot
  for _, entry in ipairs(earlier) do
    redis.call('ZREM', key, entry[1])
  end
  return {2, now, refused_rule, refused_until}
end

-- one entry for the message, this attempt's, at the latest time any earlier one had
local score = now
for _, entry in ipairs(earlier) do
  if entry[2] > score then score = entry[2] end
  redis.call('ZREM', key, entry[1])
end
redis.call('ZADD', key, score, member)
redis.call('PEXPIRE', key, ttl)
return {1, now}
