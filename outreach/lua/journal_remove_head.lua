if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then
  redis.call('LPOP', KEYS[1])
  if KEYS[2] then redis.call('RPUSH', KEYS[2], ARGV[1]) end
  return 1
end
return 0
