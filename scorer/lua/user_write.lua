-- Compare-and-set of one user's state (computed by fraudcore/user_kernel.py; layout in
-- fraudcore/user_state.py).
--
-- KEYS[1]  user state
-- ARGV[1]  what the state was computed from: "" = no state; otherwise bytes 9-16 of the
--          state read (its version word, in every format since 4: user_state.fence)
-- ARGV[2]  the new state
-- ARGV[3]  idle expiry, in ms
-- Returns  1 if written; 0 if the stored state is no longer the one read, i.e. someone
--          else wrote the user since (a new owner of its partition after a rebalance, or
--          the old owner if this process is the zombie). Nothing is written then: the
--          caller must not commit the batch, and computes it again from the new state.
local raw = redis.call("GET", KEYS[1])
local same
if not raw then
  same = ARGV[1] == ""
else
  same = string.sub(raw, 9, 16) == ARGV[1]
end
if not same then return 0 end
redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
return 1
