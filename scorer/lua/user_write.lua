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
-- GETRANGE answers "" for a missing key as for a state shorter than 9 bytes, which is
-- what the caller sends for both, and copies 8 bytes instead of the whole state.
if redis.call("GETRANGE", KEYS[1], 8, 15) ~= ARGV[1] then return 0 end
redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
return 1
