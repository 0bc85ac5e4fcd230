-- Merchant risk features and state, for the transactions of one merchant in one batch.
-- Mirrors fraudcore/features.py (merchant_features, update_merchant, fold_label).
--
-- KEYS[1]  merchant state, msgpack {days, marks, frauds}:
--            days   day -> transactions that day
--            marks  "topic:partition" -> highest source offset already counted, so a
--                   replayed batch (after an aborted Kafka transaction) counts nothing twice
--            frauds transaction_id -> available_at ms of its first fraud label
-- ARGV[1]  msgpack array of ts_ms, "topic:partition", offset, ts_ms, ... (3 per transaction)
-- ARGV[2]  "1" = read-only
-- ARGV[3]  idle expiry in ms
-- Returns  the feature vectors, 8 little-endian doubles per transaction, concatenated.
local DAY = 86400000
local txs = cmsgpack.unpack(ARGV[1])
local readonly = ARGV[2] == "1"
local raw = redis.call("GET", KEYS[1])
local st
if raw then st = cmsgpack.unpack(raw) else st = {{}, {}, {}} end
local days, marks, frauds = st[1], st[2], st[3]

local results = {}
local changed = false
for i = 1, #txs, 3 do
  local t, source, offset = txs[i], txs[i + 1], txs[i + 2]
  local today = math.floor(t / DAY)
  local c1, c7, c30 = days[today - 1] or 0, 0, 0
  for day = today - 30, today - 1 do
    local c = days[day]
    if c then
      c30 = c30 + c
      if day >= today - 7 then c7 = c7 + c end
    end
  end
  local f1, f7, f30 = 0, 0, 0
  for _, available in pairs(frauds) do
    local age = t - available
    if age >= 0 and age < 30 * DAY then
      f30 = f30 + 1
      if age < 7 * DAY then
        f7 = f7 + 1
        if age < DAY then f1 = f1 + 1 end
      end
    end
  end
  results[#results + 1] = struct.pack("<dddddddd", c1, c7, c30, f1, f7, f30, f7 / (c7 + 1), f30 / (c30 + 1))
  if not readonly and offset > (marks[source] or -1) then
    for day in pairs(days) do
      if day < today - 31 then days[day] = nil end
    end
    days[today] = (days[today] or 0) + 1
    marks[source] = offset
    changed = true
  end
end
if changed then
  redis.call("SET", KEYS[1], cmsgpack.pack({days, marks, frauds}), "PX", ARGV[3])
end
return table.concat(results)
