-- Format 3 of the user script, frozen: the last Lua writer, as shipped before the user
-- features moved into the scorer process. Kept only for tests, as the oracle that writes
-- the format-3 states scorer/user_state.py must still read (tests/scorer/test_user_state.py);
-- do not change it, whatever fraudcore/features.py becomes.
-- Per-user features and state, for the transactions of one user in one batch.
-- Mirrored fraudcore/features.py (user_features, update_user) operation for operation.
--
-- KEYS[1]  user state: concatenated msgpack values (format 3, below)
-- ARGV[1]  msgpack array of the transactions' TxnInput tuples, in stream order:
--          {txid, user, merchant, ts_ms, cents, country, lat, lon, device}
--          (lat/lon nil when unknown, country/device "" when unknown)
-- ARGV[2]  "1" = read-only (compute, change nothing)
-- ARGV[3]  idle expiry of the state, in ms
-- Returns  the feature vectors, 21 little-endian doubles per transaction, concatenated
--          (the client reads them with one numpy.frombuffer; NaN = missing).
--
-- State format 3 is flat on purpose: msgpack decoding and encoding is most of this
-- script's cost, and it grows with the number of Lua tables, not with bytes. So:
--   3, recent, days, closed_count, closed_sum, closed_sq, open_day, open_count, open_sum,
--   open_sq, last_ts, last_lat, last_lon, devices, countries
--   recent     8 values per event: txid, ts, cents, merchant, country, lat, lon, result,
--              where result is the event's feature vector as it was returned (21 doubles;
--              only sent back on a replay, so it is never decoded here)
--   open_*     the bucket of the latest UTC day: day (false when none), count, cents sum,
--              cents^2 sum; most calls only add to it
--   days       the buckets of earlier days, ascending, as one binary string of 24-byte
--              records: day, count (int32 LE), cents sum, cents^2 sum (doubles: exact
--              below 2^53); an opaque string costs next to nothing to decode and encode
--   closed_*   the totals of `days`: a 30-day window then costs the few records at its
--              edges, not all of them (the sums are exact integers, so subtracting the
--              records outside the window gives exactly the sum of those inside)
--   last_*     the latest event (false when there is none)
--   devices    3 values per device: id, first ts, last ts (countries alike)
-- Format 2 (the same without closed_*, each result a msgpack array) and format 1 (one msgpack array
-- {recent, days, last, devices, countries} of nested tables) are still read, and rewritten
-- as format 3 by the first call that changes the state.
local DAY = 86400000
local HOUR = 3600000
local MINUTE = 60000
local KNOWN_FOR = 30 * DAY
local NAN = 0 / 0
local EARTH_RADIUS_KM = 6371.0088
local RAD = math.pi / 180
local floor = math.floor
local DAY_RECORD = "<i4i4dd"
local DAY_BYTES = 24
local VECTOR = "<" .. string.rep("d", 21)
-- Below this, sums of cents and cents^2 (non-negative integers) are exact in any order.
local EXACT = 2 ^ 52

local txs = cmsgpack.unpack(ARGV[1])
local readonly = ARGV[2] == "1"
local raw = redis.call("GET", KEYS[1])

local recent, days, closed_count, closed_sum, closed_sq, open_day, open_count, open_sum, open_sq
local last_ts, last_lat, last_lon, devices, countries

local function close_totals()
  closed_count, closed_sum, closed_sq = 0, 0, 0
  for pos = 1, #days, DAY_BYTES do
    local _, count, sum, sq = struct.unpack(DAY_RECORD, days, pos)
    closed_count, closed_sum, closed_sq = closed_count + count, closed_sum + sum, closed_sq + sq
  end
end

local function upgrade(st)
  local old_recent, old_days, last, old_devices, old_countries = st[1], st[2], st[3], st[4], st[5]
  recent = {}
  for i = 1, #old_recent do
    local e = old_recent[i]
    local n = #recent
    recent[n + 1], recent[n + 2], recent[n + 3], recent[n + 4] = e[1], e[2], e[3], e[4]
    recent[n + 5], recent[n + 6], recent[n + 7] = e[5], e[6], e[7]
    recent[n + 8] = struct.pack(VECTOR, unpack(e[8]))
  end
  local order = {}
  for day in pairs(old_days) do order[#order + 1] = day end
  table.sort(order)
  local records = {}
  for i = 1, #order - 1 do
    local b = old_days[order[i]]
    records[i] = struct.pack(DAY_RECORD, order[i], b[1], b[2], b[3])
  end
  days = table.concat(records)
  close_totals()
  open_day, open_count, open_sum, open_sq = false, 0, 0, 0
  if #order > 0 then
    local b = old_days[order[#order]]
    open_day, open_count, open_sum, open_sq = order[#order], b[1], b[2], b[3]
  end
  if last then last_ts, last_lat, last_lon = last[1], last[2], last[3] else last_ts = false end
  local function flat(seen)
    local out = {}
    for key, span in pairs(seen) do
      local n = #out
      out[n + 1], out[n + 2], out[n + 3] = key, span[1], span[2]
    end
    return out
  end
  devices, countries = flat(old_devices), flat(old_countries)
end

if not raw then
  recent, days, closed_count, closed_sum, closed_sq = {}, "", 0, 0, 0
  open_day, open_count, open_sum, open_sq = false, 0, 0, 0
  last_ts, last_lat, last_lon, devices, countries = false, false, false, {}, {}
else
  local format = string.byte(raw, 1)
  if format == 3 then
    local _
    _, recent, days, closed_count, closed_sum, closed_sq, open_day, open_count, open_sum,
      open_sq, last_ts, last_lat, last_lon, devices, countries = cmsgpack.unpack(raw)
  elseif format == 2 then
    local _
    _, recent, days, open_day, open_count, open_sum, open_sq,
      last_ts, last_lat, last_lon, devices, countries = cmsgpack.unpack(raw)
    for j = 8, #recent, 8 do recent[j] = struct.pack(VECTOR, unpack(cmsgpack.unpack(recent[j]))) end
    close_totals()
  else
    upgrade(cmsgpack.unpack(raw))
  end
end

local function mean(total, count)
  if count > 0 then return total / count / 100 end
  return NAN
end

local function haversine(lat1, lon1, lat2, lon2)
  local half_dlat = math.sin((lat2 - lat1) * RAD / 2)
  local half_dlon = math.sin((lon2 - lon1) * RAD / 2)
  local a = half_dlat * half_dlat + math.cos(lat1 * RAD) * math.cos(lat2 * RAD) * half_dlon * half_dlon
  return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(math.min(1.0, a)))
end

local function first_seen(seen, key)
  for j = 1, #seen, 3 do
    if seen[j] == key then return seen[j + 1] end
  end
  return nil
end

-- Returns the packed 21-value feature vector, and whether it is a replay.
local function features(tx)
  local txid, t, cents, lat, lon, country, device = tx[1], tx[4], tx[5], tx[7], tx[8], tx[6], tx[9]
  for j = 1, #recent, 8 do
    if recent[j] == txid then return recent[j + 7], true end
  end
  local today = floor(t / DAY)
  local c1m, c10m, c1h, c24h, sum24h = 0, 0, 0, 0, 0
  local today_count, today_sum, today_sq = 0, 0, 0
  local merchants, n_merchants, countries24, n_countries = {}, 0, {}, 0
  local prev_ts, prev_lat, prev_lon = -1, false, false
  for j = 1, #recent, 8 do
    local ts = recent[j + 1]
    local age = t - ts
    if age > 0 then
      local amount = recent[j + 2]
      if age <= DAY then
        c24h = c24h + 1
        sum24h = sum24h + amount
        local merchant, where = recent[j + 3], recent[j + 4]
        if not merchants[merchant] then merchants[merchant] = true; n_merchants = n_merchants + 1 end
        if where ~= "" and not countries24[where] then
          countries24[where] = true; n_countries = n_countries + 1
        end
        if age <= HOUR then
          c1h = c1h + 1
          if age <= 10 * MINUTE then
            c10m = c10m + 1
            if age <= MINUTE then c1m = c1m + 1 end
          end
        end
      end
      if floor(ts / DAY) == today then
        today_count = today_count + 1
        today_sum = today_sum + amount
        today_sq = today_sq + amount * amount
      end
      if ts >= prev_ts then prev_ts, prev_lat, prev_lon = ts, recent[j + 5], recent[j + 6] end
    end
  end
  if last_ts and prev_ts < last_ts and last_ts < t then
    prev_ts, prev_lat, prev_lon = last_ts, last_lat, last_lon
  end

  local count7, sum7 = 0, 0
  local count30, sum30, sq30 = today_count, today_sum, today_sq
  if closed_sq + today_sq + open_sq < EXACT then
    -- Every partial sum is exact, so the 30-day window is the totals less the records
    -- outside it, found at the two ends of `days`; the 7-day window is at its end.
    count30, sum30, sq30 = count30 + closed_count, sum30 + closed_sum, sq30 + closed_sq
    local size, pos = #days, 1
    while pos < size do
      local day, count, sum, sq = struct.unpack(DAY_RECORD, days, pos)
      if day >= today - 29 then break end
      count30, sum30, sq30 = count30 - count, sum30 - sum, sq30 - sq
      pos = pos + DAY_BYTES
    end
    local back = size - DAY_BYTES + 1
    while back >= pos do
      local day, count, sum, sq = struct.unpack(DAY_RECORD, days, back)
      if day < today - 6 then break end
      if day > today - 1 then
        count30, sum30, sq30 = count30 - count, sum30 - sum, sq30 - sq
      else
        count7, sum7 = count7 + count, sum7 + sum
      end
      back = back - DAY_BYTES
    end
  else
    -- Amounts near the contract's maximum: add the records up, ascending, as format 1 did.
    for pos = 1, #days, DAY_BYTES do
      local day, count, sum, sq = struct.unpack(DAY_RECORD, days, pos)
      if day >= today - 29 and day <= today - 1 then
        count30 = count30 + count
        sum30 = sum30 + sum
        sq30 = sq30 + sq
        if day >= today - 6 then
          count7 = count7 + count
          sum7 = sum7 + sum
        end
      end
    end
  end
  if open_day and open_day >= today - 29 and open_day <= today - 1 then
    count30 = count30 + open_count
    sum30 = sum30 + open_sum
    sq30 = sq30 + open_sq
    if open_day >= today - 6 then
      count7 = count7 + open_count
      sum7 = sum7 + open_sum
    end
  end
  count7 = count7 + today_count
  sum7 = sum7 + today_sum

  local mean30 = mean(sum30, count30)
  local ratio = NAN
  if count30 > 0 and mean30 > 0 then ratio = cents / 100 / mean30 end
  local zscore = NAN
  if count30 >= 2 then
    local mean_c = sum30 / count30
    local variance = sq30 / count30 - mean_c * mean_c
    if variance > 0 then zscore = (cents - mean_c) / math.sqrt(variance) end
  end

  local since_prev, distance, speed = NAN, NAN, NAN
  if prev_ts >= 0 then
    since_prev = (t - prev_ts) / 1000
    if lat and lon and prev_lat and prev_lon then
      distance = haversine(prev_lat, prev_lon, lat, lon)
      speed = distance / (math.max(t - prev_ts, MINUTE) / HOUR)
    end
  end

  local new_device = NAN
  if device ~= "" then
    local first = first_seen(devices, device)
    if first and first < t then new_device = 0 else new_device = 1 end
  end
  local new_country = NAN
  if country ~= "" then
    local first = first_seen(countries, country)
    if first and first < t then new_country = 0 else new_country = 1 end
  end

  return struct.pack(VECTOR,
    c1m, c10m, c1h, c24h, count7, count30,
    sum24h / 100, mean(sum24h, c24h), sum7 / 100, mean(sum7, count7),
    sum30 / 100, mean30, ratio, zscore, since_prev,
    n_merchants, n_countries, distance, speed, new_device, new_country
  ), false
end

-- Drops the keys unused for KNOWN_FOR before t, then records key at t.
-- Rebuilds the list only when something expired (rare); otherwise updates it in place.
local function remember(seen, key, t)
  local n = #seen
  for j = 3, n, 3 do
    if seen[j] < t - KNOWN_FOR then
      local out, m = {}, 0
      for i = 1, n, 3 do
        if seen[i + 2] >= t - KNOWN_FOR then
          out[m + 1], out[m + 2], out[m + 3] = seen[i], seen[i + 1], seen[i + 2]
          m = m + 3
        end
      end
      seen, n = out, m
      break
    end
  end
  if key == "" then return seen end
  for j = 1, n, 3 do
    if seen[j] == key then
      if t < seen[j + 1] then seen[j + 1] = t end
      if t > seen[j + 2] then seen[j + 2] = t end
      return seen
    end
  end
  seen[n + 1], seen[n + 2], seen[n + 3] = key, t, t
  return seen
end

local function update(tx, result)
  local t, cents, lat, lon = tx[4], tx[5], tx[7] or false, tx[8] or false
  local n = #recent
  for j = 2, n, 8 do
    if recent[j] < t - DAY then
      local kept, m = {}, 0
      for i = 1, n, 8 do
        if recent[i + 1] >= t - DAY then
          for k = 0, 7 do kept[m + 1 + k] = recent[i + k] end
          m = m + 8
        end
      end
      recent, n = kept, m
      break
    end
  end
  recent[n + 1], recent[n + 2], recent[n + 3], recent[n + 4] = tx[1], t, cents, tx[3]
  recent[n + 5], recent[n + 6], recent[n + 7], recent[n + 8] = tx[6], lat, lon, result

  -- Buckets of days before today - 30 expire; the earliest are first in `days`.
  local today = floor(t / DAY)
  local was_inexact = closed_sq >= EXACT
  if open_day and open_day < today - 30 then
    days, open_day, open_count, open_sum, open_sq = "", false, 0, 0, 0
    closed_count, closed_sum, closed_sq = 0, 0, 0
  end
  local size, keep = #days, 1
  while keep < size do
    local day, c, s, q = struct.unpack(DAY_RECORD, days, keep)
    if day >= today - 30 then break end
    closed_count, closed_sum, closed_sq = closed_count - c, closed_sum - s, closed_sq - q
    keep = keep + DAY_BYTES
  end
  if keep > 1 then days = string.sub(days, keep) end

  local sq = cents * cents
  if not open_day then
    open_day, open_count, open_sum, open_sq = today, 1, cents, sq
  elseif today == open_day then
    open_count, open_sum, open_sq = open_count + 1, open_sum + cents, open_sq + sq
  elseif today > open_day then
    days = days .. struct.pack(DAY_RECORD, open_day, open_count, open_sum, open_sq)
    closed_count, closed_sum = closed_count + open_count, closed_sum + open_sum
    closed_sq = closed_sq + open_sq
    open_day, open_count, open_sum, open_sq = today, 1, cents, sq
  else
    -- An event older than the open day (out of order): rare, so rebuild the records.
    local out, added = {}, false
    for pos = 1, #days, DAY_BYTES do
      local day, c, s, q = struct.unpack(DAY_RECORD, days, pos)
      if not added and day >= today then
        if day > today then out[#out + 1] = struct.pack(DAY_RECORD, today, 1, cents, sq) end
        added = true
      end
      if day == today then c, s, q = c + 1, s + cents, q + sq end
      out[#out + 1] = struct.pack(DAY_RECORD, day, c, s, q)
    end
    if not added then out[#out + 1] = struct.pack(DAY_RECORD, today, 1, cents, sq) end
    days = table.concat(out)
    close_totals()
  end
  -- Totals kept up to date by adding and subtracting are exact only below EXACT.
  if was_inexact or closed_sq >= EXACT then close_totals() end

  if (not last_ts) or t >= last_ts then last_ts, last_lat, last_lon = t, lat, lon end
  devices = remember(devices, tx[9], t)
  countries = remember(countries, tx[6], t)
end

local results = {}
local changed = false
for i = 1, #txs do
  local result, replay = features(txs[i])
  results[i] = result
  if not replay and not readonly then
    update(txs[i], result)
    changed = true
  end
end
if changed then
  redis.call("SET", KEYS[1], cmsgpack.pack(
    3, recent, days, closed_count, closed_sum, closed_sq, open_day, open_count, open_sum, open_sq,
    last_ts, last_lat, last_lon, devices, countries
  ), "PX", ARGV[3])
end

return table.concat(results)
