-- Merchant risk features and state, for the transactions of one merchant in one batch.
-- Mirrors fraudcore/features.py (merchant_features, update_merchant).
--
-- KEYS[1]  merchant hash: d<day> -> transactions that day; w:<topic:partition> -> the
--          highest source offset already counted (so a replayed batch counts nothing twice)
-- KEYS[2]  merchant fraud labels: sorted set transaction_id -> available_at ms
-- ARGV[1]  msgpack array of {ts_ms, source "topic:partition", offset}
-- ARGV[2]  "1" = read-only
-- ARGV[3]  idle expiry in ms
-- Returns  msgpack array of 8-value feature arrays.
local DAY = 86400000
local txs = cmsgpack.unpack(ARGV[1])
local readonly = ARGV[2] == "1"

local window_cache = {}
local function day_counts(today)
  local cached = window_cache[today]
  if cached then return cached end
  local fields = {}
  for day = today - 30, today - 1 do fields[#fields + 1] = "d" .. day end
  local values = redis.call("HMGET", KEYS[1], unpack(fields))
  -- values[1] is today-30 ... values[30] is today-1
  local c1 = tonumber(values[30]) or 0
  local c7, c30 = 0, 0
  for i = 1, 30 do
    local v = tonumber(values[i]) or 0
    c30 = c30 + v
    if i > 23 then c7 = c7 + v end
  end
  cached = {c1, c7, c30}
  window_cache[today] = cached
  return cached
end

local function frauds_within(t, window)
  return redis.call("ZCOUNT", KEYS[2], "(" .. string.format("%d", t - window), string.format("%d", t))
end

local results = {}
local watermarks = {}
local changed = false
for i = 1, #txs do
  local t, source, offset = txs[i][1], txs[i][2], txs[i][3]
  local today = math.floor(t / DAY)
  local c = day_counts(today)
  local f1 = frauds_within(t, DAY)
  local f7 = frauds_within(t, 7 * DAY)
  local f30 = frauds_within(t, 30 * DAY)
  results[i] = {c[1], c[2], c[3], f1, f7, f30, f7 / (c[2] + 1), f30 / (c[3] + 1)}
  if not readonly then
    local mark = watermarks[source]
    if mark == nil then
      mark = tonumber(redis.call("HGET", KEYS[1], "w:" .. source)) or -1
    end
    if offset > mark then
      redis.call("HINCRBY", KEYS[1], "d" .. today, 1)
      redis.call("HDEL", KEYS[1], "d" .. (today - 32))
      mark = offset
      changed = true
    end
    watermarks[source] = mark
  end
end
if changed then
  for source, mark in pairs(watermarks) do
    redis.call("HSET", KEYS[1], "w:" .. source, string.format("%d", mark))
  end
  redis.call("PEXPIRE", KEYS[1], ARGV[3])
end
return cmsgpack.pack(results)
