-- Fold one label into its merchant's state, as fraudcore/merchant.py MerchantState.fold_label:
-- only fraud labels count, and the first one for a transaction wins, so a chargeback and
-- an analyst verdict on the same transaction count once. (merchant_state.lua comes first.)
--
-- KEYS[1]  merchant state
-- ARGV[1]  transaction_id   ARGV[2] label   ARGV[3] available_at ms   ARGV[4] expiry ms
-- Returns  1 if the label was counted now, 0 otherwise.
local KEEP_FRAUDS_FOR = 60 * DAY
if ARGV[2] ~= "fraud" then return 0 end
local key = KEYS[1]
upgrade(key)
local raw = redis.call("HGET", key, "fraud_ids")
local frauds = {}
if raw then frauds = cmsgpack.unpack(raw) end
if frauds[ARGV[1]] then return 0 end
local available = tonumber(ARGV[3])
local kept, times = {}, {}
for txid, at in pairs(frauds) do
  if at >= available - KEEP_FRAUDS_FOR then
    kept[txid] = at
    times[#times + 1] = struct.pack("<d", at)
  end
end
kept[ARGV[1]] = available
times[#times + 1] = struct.pack("<d", available)
redis.call("HSET", key, "fraud_ids", cmsgpack.pack(kept), "frauds", table.concat(times))
redis.call("PEXPIRE", key, ARGV[4])
return 1
