-- KEYS lease keys; ARGV[1] the attempt: deletes those the attempt still holds
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
