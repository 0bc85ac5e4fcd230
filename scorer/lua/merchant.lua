-- Count one merchant's transactions of a batch, and answer what its state held before:
-- the merchant record that fraudcore/merchant.py computes the features from (its
-- docstring has the layout). Storage only: no feature arithmetic here.
--
-- KEYS[1]  merchant state, msgpack {days, marks, frauds}:
--            days   day -> transactions counted that day (kept KEEP_DAYS days)
--            marks  "topic:partition" -> highest source offset already counted, so a
--                   replayed batch (after an aborted Kafka transaction) counts nothing twice
--            frauds transaction_id -> available_at ms of its first fraud label
-- ARGV[1]  msgpack array of ts_ms, "topic:partition", offset, ts_ms, ... (3 per transaction)
-- ARGV[2]  "1" = read-only
-- ARGV[3]  idle expiry in ms
-- Returns  the merchant record, little-endian doubles.
local DAY = 86400000
local KEEP_DAYS = 45  -- fraudcore.merchant.KEEP_DAYS
local txs = cmsgpack.unpack(ARGV[1])
local readonly = ARGV[2] == "1"
local raw = redis.call("GET", KEYS[1])
local st
if raw then st = cmsgpack.unpack(raw) else st = {{}, {}, {}} end
local days, marks, frauds = st[1], st[2], st[3]

local values = {0, 0}
local n_days, n_frauds = 0, 0
for day, count in pairs(days) do
  values[#values + 1] = day
  values[#values + 1] = count
  n_days = n_days + 1
end
for _, available in pairs(frauds) do
  values[#values + 1] = available
  n_frauds = n_frauds + 1
end
values[1], values[2] = n_days, n_frauds

local changed = false
for i = 1, #txs, 3 do
  local t, source, offset = txs[i], txs[i + 1], txs[i + 2]
  local counted = 0
  if not readonly and offset > (marks[source] or -1) then
    local today = math.floor(t / DAY)
    for day in pairs(days) do
      if day < today - KEEP_DAYS then days[day] = nil end
    end
    days[today] = (days[today] or 0) + 1
    marks[source] = offset
    changed = true
    counted = 1
  end
  values[#values + 1] = counted
end
if changed then
  redis.call("SET", KEYS[1], cmsgpack.pack({days, marks, frauds}), "PX", ARGV[3])
end
-- unpack() takes a few thousand values at most: pack in slices.
local parts = {}
for first = 1, #values, 1000 do
  local last = math.min(first + 999, #values)
  parts[#parts + 1] = struct.pack("<" .. string.rep("d", last - first + 1), unpack(values, first, last))
end
return table.concat(parts)
