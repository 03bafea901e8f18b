"""The cluster's shared state in Redis: live workers, per-expert queues and the placement table.

    {base}jobs               the intake stream every gateway writes (``redis_queue``)
    {base}q:{expert}         one stream per expert, consumer group ``workers``; jobs move here from
                             the intake (``INTAKE``, run by any worker), keeping their fields plus ``at``
                             (the intake entry's millisecond time: when the request arrived)
    {base}experts            hash expert -> its JSON (what a worker needs to load it)
    {base}arrived, last      hashes expert -> requests queued so far, the newest one's arrival (ms)
    {base}workers            set of worker names that ever registered
    {base}worker:{name}      hash: kind, max_models, memory_mb, started, beat, stats, holds, tiers (JSON)
    {base}alive:{name}       exists while the worker heart-beats (PX = its reclaim time)
    {base}holders:{expert}   hash worker -> "loading" | "loaded": the placement table
    {base}loaded_at          hash expert -> when it was last claimed for a load (ms; the reload gap)

``base`` is ``{CONCLAVE_REDIS_PREFIX}sched:``.  Every script reads Redis's own clock (TIME), so
ages do not depend on the machines' clocks.  ``CLAIM`` is atomic: a worker records that it loads
an expert only if fewer live workers than allowed (1, or one more for a replica) hold it; entries
of workers whose ``alive`` key expired are dropped by whichever script meets them first.
"""

from __future__ import annotations

import json
import time

from .affinity import ClusterView, Queue

GROUP = "workers"

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# KEYS: intake stream; ARGV: base, max entries, seconds to remember a move.  Moves jobs to their expert's
# stream, noting where each went (``moved:<intake id>``) for the gateway's lost-job check.
INTAKE = """
local base = ARGV[1]
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[2])
for _, e in ipairs(entries) do
  local id, f = e[1], e[2]
  local expert_json, request
  for i = 1, #f, 2 do
    if f[i] == 'expert' then expert_json = f[i + 1] elseif f[i] == 'request' then request = f[i + 1] end
  end
  local name = cjson.decode(expert_json).name
  local q = base .. 'q:' .. name
  if redis.call('EXISTS', q) == 0 then redis.call('XGROUP', 'CREATE', q, 'workers', '0', 'MKSTREAM') end
  local at = string.match(id, '^(%d+)')
  local new = redis.call('XADD', q, '*', 'at', at, unpack(f))
  redis.call('HSET', base .. 'experts', name, expert_json)
  redis.call('HINCRBY', base .. 'arrived', name, 1)
  redis.call('HSET', base .. 'last', name, at)
  if request then
    local rk = base .. 'request:' .. request
    if redis.call('HGET', rk, 'entry') == id then redis.call('HSET', rk, 'entry', new, 'stream', q) end
  end
  redis.call('SET', base .. 'moved:' .. id, q .. '|' .. new, 'EX', ARGV[3])   -- for the gateway's lost-job check
  redis.call('XDEL', KEYS[1], id)
end
return #entries
"""

_LIVE = """
local function live(base, w) return redis.call('EXISTS', base .. 'alive:' .. w) == 1 end
local function holders(base, name)
  local out = {}
  local h = redis.call('HGETALL', base .. 'holders:' .. name)
  for i = 1, #h, 2 do
    if live(base, h[i]) then table.insert(out, h[i]); table.insert(out, h[i + 1])
    else redis.call('HDEL', base .. 'holders:' .. name, h[i]) end
  end
  return out
end
"""

# ARGV: base.  {now_ms, {worker, max_models, ...}, {{expert, pending, oldest_ms, last_ms, arrived, holders, loaded_at_ms}...}}
VIEW = _NOW + _LIVE + """
local base = ARGV[1]
local workers = {}
for _, w in ipairs(redis.call('SMEMBERS', base .. 'workers')) do
  if live(base, w) then
    table.insert(workers, w); table.insert(workers, redis.call('HGET', base .. 'worker:' .. w, 'max_models') or '1')
  end
end
local queues = {}
for _, name in ipairs(redis.call('HKEYS', base .. 'experts')) do
  local q = base .. 'q:' .. name
  local len = redis.call('XLEN', q)
  local pending, oldest = 0, now
  if len > 0 then
    local info = redis.call('XPENDING', q, 'workers')
    local held, dead, deadmin = 0, 0, nil
    for _, c in ipairs(info[4] or {}) do
      if live(base, c[1]) then held = held + tonumber(c[2]) else dead = dead + tonumber(c[2]) end
    end
    pending = len - held
    local last_id = '0-0'
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', q)) do
      for i = 1, #g, 2 do if g[i] == 'last-delivered-id' then last_id = g[i + 1] end end
    end
    local first = redis.call('XRANGE', q, '(' .. last_id, '+', 'COUNT', 1)
    if first[1] then oldest = tonumber(first[1][2][2]) end
    if dead > 0 and info[2] then
      local e = redis.call('XRANGE', q, info[2], info[2])
      if e[1] then oldest = math.min(oldest, tonumber(e[1][2][2])) end
    end
  end
  table.insert(queues, {name, pending, oldest, redis.call('HGET', base .. 'last', name) or '0',
                        redis.call('HGET', base .. 'arrived', name) or '0', holders(base, name),
                        redis.call('HGET', base .. 'loaded_at', name) or '0'})
end
return {now, workers, queues}
"""

# ARGV: base, worker, expert, most holders allowed (counting this one).  1 if the worker may load it.
CLAIM = _NOW + _LIVE + """
local base, me, name = ARGV[1], ARGV[2], ARGV[3]
local h = holders(base, name)
local others = 0
for i = 1, #h, 2 do
  if h[i] == me then return 1 end
  others = others + 1
end
if others + 1 > tonumber(ARGV[4]) then return 0 end
redis.call('HSET', base .. 'holders:' .. name, me, 'loading')
redis.call('HSET', base .. 'loaded_at', name, now)
return 1
"""

# ARGV: base, expert memory MB (or ''), intake key.  {queued jobs, live workers, of which can host it}
# ARGV: base, the expert's memory_mb, intake stream, its backend.  {queued jobs, live workers, live workers
# of a kind that runs the backend (the scripted "fake" runs any), those of them with the memory for it}
ADMIT = """
local base, mb, backend = ARGV[1], tonumber(ARGV[2]), ARGV[4]
local total = redis.call('XLEN', ARGV[3])
for _, name in ipairs(redis.call('HKEYS', base .. 'experts')) do total = total + redis.call('XLEN', base .. 'q:' .. name) end
local live, kinded, fit = 0, 0, 0
for _, w in ipairs(redis.call('SMEMBERS', base .. 'workers')) do
  if redis.call('EXISTS', base .. 'alive:' .. w) == 1 then
    live = live + 1
    local kind = redis.call('HGET', base .. 'worker:' .. w, 'kind') or ''
    if backend == nil or backend == '' or kind == backend or kind == 'fake' or kind == '' or kind == 'unknown' then
      kinded = kinded + 1
      local cap = tonumber(redis.call('HGET', base .. 'worker:' .. w, 'memory_mb') or '')
      if mb == nil or cap == nil or mb <= cap then fit = fit + 1 end
    end
  end
end
return {total, live, kinded, fit}
"""


MOVED_TTL_S = 86400     # how long the gateway can follow a job moved out of the intake


def moved_key(prefix: str, intake_id: str) -> str:
    """Where the intake entry ``intake_id`` went: ``"<expert stream>|<entry id>"`` (set by INTAKE)."""
    return base_of(prefix) + "moved:" + intake_id


def base_of(prefix: str) -> str:
    return prefix + "sched:"


def queue_key(prefix: str, expert: str) -> str:
    return base_of(prefix) + "q:" + expert


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class Placement:
    """One worker's handle on the shared table (synchronous redis client)."""

    def __init__(self, r, prefix: str, name: str, ttl_ms: int = 5000):
        self.r, self.prefix, self.base, self.name, self.ttl_ms = r, prefix, base_of(prefix), name, max(ttl_ms, 300)
        self._intake, self._view = r.register_script(INTAKE), r.register_script(VIEW)
        self._claim = r.register_script(CLAIM)

    def register(self, kind: str, max_models: int, memory_mb: int | None) -> None:
        p = self.r.pipeline()
        p.sadd(self.base + "workers", self.name)
        p.hset(self.base + "worker:" + self.name, mapping={
            "kind": kind, "max_models": max_models, "memory_mb": "" if memory_mb is None else memory_mb,
            "started": time.time(), "beat": time.time(), "stats": "{}"})
        p.set(self.base + "alive:" + self.name, 1, px=self.ttl_ms)
        p.execute()

    def beat(self, stats: dict, holds: list[str], tiers: dict | None = None) -> None:
        """``tiers``: expert -> {tier, switch_s, cost_s per tier, ...} for workers with tiers (vLLM)."""
        p = self.r.pipeline()
        p.set(self.base + "alive:" + self.name, 1, px=self.ttl_ms)
        p.hset(self.base + "worker:" + self.name, mapping={"beat": time.time(), "stats": json.dumps(stats),
                                                           "holds": json.dumps(holds),
                                                           "tiers": json.dumps(tiers or {})})
        p.expire(self.base + "worker:" + self.name, 86400)
        p.execute()

    def leave(self, holds: list[str]) -> None:
        p = self.r.pipeline()
        for e in holds:
            p.hdel(self.base + "holders:" + e, self.name)
        p.delete(self.base + "alive:" + self.name)
        p.hset(self.base + "worker:" + self.name, "holds", "[]")
        p.execute()

    def intake(self, jobs_key: str, count: int = 200, remember_s: int = MOVED_TTL_S) -> int:
        return int(self._intake(keys=[jobs_key], args=[self.base, count, remember_s]))

    def view(self) -> ClusterView:
        now_ms, workers, queues = self._view(args=[self.base])
        now = now_ms / 1000
        ws = {_s(workers[i]): int(_s(workers[i + 1]) or 1) for i in range(0, len(workers), 2)}
        qs, holders, loaded_at = {}, {}, {}
        for name, pending, oldest, last, arrived, hs, at in queues:
            name = _s(name)
            if int(_s(at)):
                loaded_at[name] = int(_s(at)) / 1000
            qs[name] = Queue(int(pending), int(oldest) / 1000, int(_s(last)) / 1000, int(_s(arrived)))
            holders[name] = {_s(hs[i]): _s(hs[i + 1]) for i in range(0, len(hs), 2)}
        return ClusterView(now, qs, holders, ws, loaded_at)

    def claim(self, expert: str, replica: bool, holders_now: int) -> bool:
        allowed = holders_now + 1 if replica else 1
        return bool(self._claim(args=[self.base, self.name, expert, allowed]))

    def sync(self, loaded: list[str], released: list[str]) -> None:
        """Record what this worker holds now (after a load or an unload)."""
        p = self.r.pipeline()
        for e in released:
            p.hdel(self.base + "holders:" + e, self.name)
        for e in loaded:
            p.hset(self.base + "holders:" + e, self.name, "loaded")
        p.execute()

    def release(self, expert: str) -> None:
        self.r.hdel(self.base + "holders:" + expert, self.name)

    def expert(self, name: str):
        from experts_registry.model import Expert

        raw = self.r.hget(self.base + "experts", name)
        return None if raw is None else Expert.from_json(_s(raw))


def report(r, prefix: str) -> dict:
    """Every registered worker (live or not) and the placement table: what ``conclave workers`` prints."""
    base, now = base_of(prefix), time.time()
    out = []
    for raw in sorted(r.smembers(base + "workers")):
        name = _s(raw)
        info = {_s(k): _s(v) for k, v in r.hgetall(base + "worker:" + name).items()}
        if not info:
            continue
        stats = json.loads(info.get("stats") or "{}")
        out.append({"name": name, "alive": bool(r.exists(base + "alive:" + name)),
                    "heartbeat_age_s": round(now - float(info.get("beat", now)), 3), "kind": info.get("kind"),
                    "max_models": int(info.get("max_models") or 1),
                    "memory_mb": int(info["memory_mb"]) if info.get("memory_mb") else None,
                    "holds": json.loads(info.get("holds") or "[]"),
                    "tiers": json.loads(info.get("tiers") or "{}"),
                    "loads": stats.get("loads_by_expert", {}), "unloads": stats.get("unloads_by_expert", {}),
                    "jobs": stats.get("jobs", 0), "busy_s": round(stats.get("load_seconds", 0) + stats.get(
                        "generate_seconds", 0) + stats.get("unload_seconds", 0), 3)})
    placement = {}
    for raw in r.hkeys(base + "experts"):
        name = _s(raw)
        hs = {_s(k): _s(v) for k, v in r.hgetall(base + "holders:" + name).items()}
        live = {w: s for w, s in hs.items() if r.exists(base + "alive:" + w)}
        placement[name] = {"holders": live, "queued": int(r.xlen(base + "q:" + name))}
    return {"workers": out, "placement": placement,
            "loads_total": sum(sum(w["loads"].values()) for w in out)}


def report_source(url: str, prefix: str, timeout_s: float = 1.0):
    """A callable giving ``report`` (for /metrics at scrape time); an empty report when Redis does not answer."""
    import redis

    r = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def read() -> dict:
        try:
            return report(r, prefix)
        except Exception:
            return {}
    return read
