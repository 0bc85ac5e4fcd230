-- Fold one label into its merchant's state, as fraudcore/merchant.py MerchantState.fold_label:
-- only fraud labels count, and the first one for a transaction wins, so a chargeback and
-- an analyst verdict on the same transaction count once.
--
-- KEYS[1]  merchant state (see merchant.lua)
-- ARGV[1]  transaction_id   ARGV[2] label   ARGV[3] available_at ms   ARGV[4] expiry ms
-- Returns  1 if the label was counted now, 0 otherwise.
local KEEP_FRAUDS_FOR = 60 * 86400000
if ARGV[2] ~= "fraud" then return 0 end
local raw = redis.call("GET", KEYS[1])
local st
if raw then st = cmsgpack.unpack(raw) else st = {{}, {}, {}} end
local frauds = st[3]
if frauds[ARGV[1]] then return 0 end
local available = tonumber(ARGV[3])
for txid, at in pairs(frauds) do
  if at < available - KEEP_FRAUDS_FOR then frauds[txid] = nil end
end
frauds[ARGV[1]] = available
redis.call("SET", KEYS[1], cmsgpack.pack(st), "PX", ARGV[4])
return 1
