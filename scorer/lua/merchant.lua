-- Count one merchant's transactions of a batch, and answer what its state held before:
-- the merchant record fraudcore/merchant.py computes the features from (its docstring has
-- the layout). Storage only: no feature arithmetic here. (merchant_state.lua comes first.)
--
-- KEYS[1]  merchant state
-- ARGV[1]  msgpack array of ts_ms, "topic:partition", offset, ts_ms, ... (3 per transaction)
-- ARGV[2]  "1" = read-only
-- ARGV[3]  idle expiry in ms
-- Returns  the merchant record, little-endian doubles.
local key = KEYS[1]
upgrade(key)
local txs = cmsgpack.unpack(ARGV[1])
local readonly = ARGV[2] == "1"

local fields, sources = {"days", "frauds"}, {}
for i = 2, #txs, 3 do
  if not sources[txs[i]] then
    fields[#fields + 1] = "mark:" .. txs[i]
    sources[txs[i]] = #fields
  end
end
local got = redis.call("HMGET", key, unpack(fields))
local days, frauds = got[1] or "", got[2] or ""
local record = struct.pack("<dd", #days / 8, #frauds / 8) .. days .. frauds

local marks = {}
for source, at in pairs(sources) do marks[source] = tonumber(got[at]) or -1 end

-- Add one to `day`: in place when it is the newest day, appended (and the oldest days
-- dropped) when it is newer; a late day is rare and rewrites the pairs.
local function count(day)
  local n = #days
  local last, last_count = -1, 0
  if n > 0 then last, last_count = struct.unpack(PAIR, days, n - 7) end
  if day == last then
    days = string.sub(days, 1, n - 8) .. struct.pack(PAIR, day, last_count + 1)
  elseif day > last then
    days = days .. struct.pack(PAIR, day, 1)
    while #days > 8 and struct.unpack(PAIR, days, 1) < day - KEEP_DAYS do
      days = string.sub(days, 9)
    end
  else
    local parts, placed = {}, false
    for pos = 1, n, 8 do
      local d, c = struct.unpack(PAIR, days, pos)
      if not placed and d >= day then
        if d == day then c = c + 1 else parts[#parts + 1] = struct.pack(PAIR, day, 1) end
        placed = true
      end
      parts[#parts + 1] = struct.pack(PAIR, d, c)
    end
    days = table.concat(parts)
  end
end

local counted = {}
local changed = false
for i = 1, #txs, 3 do
  local source, offset = txs[i + 1], txs[i + 2]
  if not readonly and offset > marks[source] then
    count(math.floor(txs[i] / DAY))
    marks[source] = offset
    changed = true
    counted[#counted + 1] = "\0\0\0\0\0\0\240\63"  -- 1.0
  else
    counted[#counted + 1] = "\0\0\0\0\0\0\0\0"  -- 0.0
  end
end
if changed then
  local update = {"days", days}
  for source, offset in pairs(marks) do
    if offset >= 0 then
      update[#update + 1] = "mark:" .. source
      update[#update + 1] = string.format("%d", offset)
    end
  end
  redis.call("HSET", key, unpack(update))
  redis.call("PEXPIRE", key, ARGV[3])
end
return record .. table.concat(counted)
