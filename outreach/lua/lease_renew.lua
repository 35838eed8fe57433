-- KEYS lease keys; ARGV[1] the attempt; ARGV[2] the lifetime in ms: renews the attempt's own
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2]) end
end
return 0
