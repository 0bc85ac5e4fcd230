-- Format 1 of the user script, as shipped before format 2 (kept to test the upgrade).
-- Per-user features and state, for the transactions of one user in one batch.
-- Mirrors fraudcore/features.py (user_features, update_user) operation for operation:
-- a test asserts both give identical vectors. Change one, change the other.
--
-- KEYS[1]  user state (msgpack: {recent, days, last, devices, countries})
-- ARGV[1]  msgpack array of {txid, ts_ms, cents, merchant, country, lat, lon, device}
--          in stream order (lat/lon false when unknown, country/device "" when unknown)
-- ARGV[2]  "1" = read-only (compute, change nothing)
-- ARGV[3]  idle expiry of the state, in ms
-- Returns  msgpack array of 21-value feature arrays, one per transaction.
local DAY = 86400000
local HOUR = 3600000
local MINUTE = 60000
local KNOWN_FOR = 30 * DAY
local NAN = 0 / 0
local EARTH_RADIUS_KM = 6371.0088
local RAD = math.pi / 180

local txs = cmsgpack.unpack(ARGV[1])
local readonly = ARGV[2] == "1"
local raw = redis.call("GET", KEYS[1])
local st
if raw then st = cmsgpack.unpack(raw) else st = {{}, {}, false, {}, {}} end
local recent, days, last, devices, countries = st[1], st[2], st[3], st[4], st[5]

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

local function features(tx)
  local txid, t, cents, lat, lon, country, device = tx[1], tx[2], tx[3], tx[6], tx[7], tx[5], tx[8]
  for i = 1, #recent do
    if recent[i][1] == txid then return recent[i][8], true end
  end
  local today = math.floor(t / DAY)
  local c1m, c10m, c1h, c24h, sum24h = 0, 0, 0, 0, 0
  local today_count, today_sum, today_sq = 0, 0, 0
  local merchants, n_merchants, countries24, n_countries = {}, 0, {}, 0
  local prev_ts, prev_lat, prev_lon = -1, false, false
  for i = 1, #recent do
    local e = recent[i]
    local age = t - e[2]
    if age > 0 then
      if age <= DAY then
        c24h = c24h + 1
        sum24h = sum24h + e[3]
        if not merchants[e[4]] then merchants[e[4]] = true; n_merchants = n_merchants + 1 end
        if e[5] ~= "" and not countries24[e[5]] then
          countries24[e[5]] = true; n_countries = n_countries + 1
        end
        if age <= HOUR then
          c1h = c1h + 1
          if age <= 10 * MINUTE then
            c10m = c10m + 1
            if age <= MINUTE then c1m = c1m + 1 end
          end
        end
      end
      if math.floor(e[2] / DAY) == today then
        today_count = today_count + 1
        today_sum = today_sum + e[3]
        today_sq = today_sq + e[3] * e[3]
      end
      if e[2] >= prev_ts then prev_ts, prev_lat, prev_lon = e[2], e[6], e[7] end
    end
  end
  if last and prev_ts < last[1] and last[1] < t then
    prev_ts, prev_lat, prev_lon = last[1], last[2], last[3]
  end

  local count7, sum7 = 0, 0
  local count30, sum30, sq30 = today_count, today_sum, today_sq
  for day = today - 29, today - 1 do
    local b = days[day]
    if b then
      count30 = count30 + b[1]
      sum30 = sum30 + b[2]
      sq30 = sq30 + b[3]
      if day >= today - 6 then
        count7 = count7 + b[1]
        sum7 = sum7 + b[2]
      end
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
    local seen = devices[device]
    if seen and seen[1] < t then new_device = 0 else new_device = 1 end
  end
  local new_country = NAN
  if country ~= "" then
    local seen = countries[country]
    if seen and seen[1] < t then new_country = 0 else new_country = 1 end
  end

  return {
    c1m, c10m, c1h, c24h, count7, count30,
    sum24h / 100, mean(sum24h, c24h), sum7 / 100, mean(sum7, count7),
    sum30 / 100, mean30, ratio, zscore, since_prev,
    n_merchants, n_countries, distance, speed, new_device, new_country,
  }, false
end

local function remember(seen, key, t)
  if key == "" then return end
  local span = seen[key]
  if not span then
    seen[key] = {t, t}
  else
    if t < span[1] then span[1] = t end
    if t > span[2] then span[2] = t end
  end
end

local function update(tx, result)
  local t = tx[2]
  local kept = {}
  for i = 1, #recent do
    if recent[i][2] >= t - DAY then kept[#kept + 1] = recent[i] end
  end
  kept[#kept + 1] = {tx[1], t, tx[3], tx[4], tx[5], tx[6], tx[7], result}
  recent = kept
  local today = math.floor(t / DAY)
  for day in pairs(days) do
    if day < today - 30 then days[day] = nil end
  end
  local b = days[today]
  if not b then b = {0, 0, 0}; days[today] = b end
  b[1] = b[1] + 1
  b[2] = b[2] + tx[3]
  b[3] = b[3] + tx[3] * tx[3]
  if (not last) or t >= last[1] then last = {t, tx[6], tx[7]} end
  for _, pair in ipairs({{devices, tx[8]}, {countries, tx[5]}}) do
    local seen = pair[1]
    for key, span in pairs(seen) do
      if span[2] < t - KNOWN_FOR then seen[key] = nil end
    end
    remember(seen, pair[2], t)
  end
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
  redis.call("SET", KEYS[1], cmsgpack.pack({recent, days, last, devices, countries}), "PX", ARGV[3])
end
return cmsgpack.pack(results)
