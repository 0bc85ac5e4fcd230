-- Fold one label into the merchant's fraud record. Mirrors fraudcore/features.py
-- fold_label: only fraud labels count, and the first one for a transaction wins, so a
-- chargeback and an analyst verdict on the same transaction count once.
--
-- KEYS[1]  merchant fraud labels: sorted set transaction_id -> available_at ms
-- ARGV[1]  transaction_id   ARGV[2] label   ARGV[3] available_at ms   ARGV[4] expiry ms
-- Returns  1 if the label was counted now, 0 otherwise.
if ARGV[2] ~= "fraud" then return 0 end
local added = redis.call("ZADD", KEYS[1], "NX", ARGV[3], ARGV[1])
redis.call("PEXPIRE", KEYS[1], ARGV[4])
return added
