"""Redis figures: memory of the feature state, and server-side time per command."""

from __future__ import annotations

from typing import Any

import numpy as np
import redis


def state_memory(redis_url: str, prefix: str) -> dict[str, Any]:
    """MEMORY USAGE of every user and merchant key under `prefix` (SAMPLES 0: exact)."""
    client = redis.Redis.from_url(redis_url)
    try:
        sizes: dict[str, list[int]] = {}
        for kind in ("u", "m"):
            keys = list(client.scan_iter(match=f"{prefix}:{kind}:*", count=5000))
            found: list[int] = []
            for start in range(0, len(keys), 2000):
                pipe = client.pipeline(transaction=False)
                for key in keys[start : start + 2000]:
                    pipe.memory_usage(key, samples=0)
                found += [int(v) for v in pipe.execute() if v is not None]
            sizes[kind] = found
    finally:
        client.close()
    users, merchants = np.array(sizes["u"]), np.array(sizes["m"])
    if users.size == 0:
        return {"users": 0}
    return {
        "users": int(users.size),
        "merchants": int(merchants.size),
        "user_key_mean_bytes": round(float(users.mean())),
        "user_key_p95_bytes": round(float(np.percentile(users, 95))),
        "merchant_key_mean_bytes": round(float(merchants.mean())) if merchants.size else 0,
        "bytes_per_active_user": round(float((users.sum() + merchants.sum()) / users.size)),
    }


def server_stats(redis_url: str) -> dict[str, Any]:
    """Calls and microseconds per command so far, and the server's CPU seconds."""
    client = redis.Redis.from_url(redis_url)
    try:
        commands = {
            name.removeprefix("cmdstat_"): {"calls": int(v["calls"]), "usec": int(v["usec"])}
            for name, v in client.info("commandstats").items()
        }
        cpu = client.info("cpu")
        info = client.info("server")
        persistence = client.info("persistence")
    finally:
        client.close()
    return {
        "commands": commands,
        "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        "version": info.get("redis_version", ""),
        # Each rewrite forks Redis and writes the whole dataset out: a CPU burst.
        "aof_rewrites": int(persistence.get("aof_rewrites", 0)),
    }


def delta(before: dict[str, Any], after: dict[str, Any], command: str) -> dict[str, float]:
    """Calls, server microseconds per call, and Redis CPU seconds between two readings.
    Redis is shared: calls by anyone else in the window are included."""
    b = before["commands"].get(command, {"calls": 0, "usec": 0})
    a = after["commands"].get(command, {"calls": 0, "usec": 0})
    calls = a["calls"] - b["calls"]
    usec = a["usec"] - b["usec"]
    return {
        "calls": calls,
        "server_usec": usec,
        "usec_per_call": round(usec / calls, 1) if calls else 0.0,
        "redis_cpu_s": round(after["cpu_s"] - before["cpu_s"], 2),
    }
