-- The merchant state's layout, prepended to merchant.lua and label.lua (FeatureStore loads
-- them so): a Redis hash under fx:m:{<merchant_id>} whose fields are
--   days        (day, transactions counted that day) as two little-endian int32 a day,
--               in ascending day order, KEEP_DAYS days
--   frauds      little-endian doubles: the available_at ms of every fraud counted
--   fraud_ids   msgpack map transaction_id -> available_at ms (the first fraud label wins)
--   mark:<topic:partition>  the highest source offset counted, so a replayed batch (after
--               an aborted Kafka transaction) counts nothing twice
-- `days` and `frauds` are kept in the merchant record's own form (fraudcore/merchant.py),
-- so a call answers them as they are, without decoding the state.
local DAY = 86400000
local KEEP_DAYS = 45  -- fraudcore.merchant.KEEP_DAYS
local PAIR = "<i4i4"

-- A state written as one msgpack string {days, marks, frauds} becomes the hash.
local function upgrade(key)
  if redis.call("TYPE", key).ok ~= "string" then return end
  local st = cmsgpack.unpack(redis.call("GET", key))
  local days, marks, frauds = st[1] or {}, st[2] or {}, st[3] or {}
  local ordered = {}
  for day in pairs(days) do ordered[#ordered + 1] = day end
  table.sort(ordered)
  local pairs_bin = {}
  for _, day in ipairs(ordered) do pairs_bin[#pairs_bin + 1] = struct.pack(PAIR, day, days[day]) end
  local times = {}
  for _, at in pairs(frauds) do times[#times + 1] = struct.pack("<d", at) end
  local ttl = redis.call("PTTL", key)
  redis.call("DEL", key)
  local fields = {"days", table.concat(pairs_bin), "frauds", table.concat(times),
                  "fraud_ids", cmsgpack.pack(frauds)}
  for source, offset in pairs(marks) do
    fields[#fields + 1] = "mark:" .. source
    fields[#fields + 1] = string.format("%d", offset)
  end
  redis.call("HSET", key, unpack(fields))
  if ttl > 0 then redis.call("PEXPIRE", key, ttl) end
end

