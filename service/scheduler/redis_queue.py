"""The scheduler's queue in Redis Streams: any gateway enqueues, worker processes consume.

    {prefix}sched:jobs          stream of jobs; consumer group ``workers``
    {prefix}sched:reply:{id}    list holding the one answer of a job (JSON), read by the gateway
    {prefix}sched:done:{id}     set once, atomically with the reply: a job is answered exactly once
    {prefix}sched:cancel:{id}   set by the gateway when its client left; workers skip the job

A worker reads jobs with XREADGROUP into its own BatchPolicy (so it still groups by expert),
keeps the jobs it holds fresh with a heartbeat (XCLAIM of its own pending entries), and takes
over the jobs of a worker that stopped heart-beating with XAUTOCLAIM.  An answer is published
by a Lua script that sets the done key and pushes the reply only if the done key was unset, so
a job re-run after a crash never answers twice.  The answer travels whole (no token streaming
through Redis yet).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import asdict

from experts_registry.errors import ExpertUnavailable, RateLimited, UpstreamError
from experts_registry.model import Expert

from ..backends.base import Delta, GenParams

GROUP = "workers"
PUBLISH = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', 3600) then
  redis.call('RPUSH', KEYS[2], ARGV[2]); redis.call('EXPIRE', KEYS[2], 600); return 1
end
return 0
"""
ERRORS = {"expert_unavailable": ExpertUnavailable}


def keys(prefix: str) -> dict[str, str]:
    base = prefix + "sched:"
    return {"jobs": base + "jobs", "reply": base + "reply:", "done": base + "done:", "cancel": base + "cancel:"}


class RedisFront:
    """The gateway side: ``stream`` enqueues a job and waits for its one answer."""

    def __init__(self, url: str, prefix: str, queue_total: int = 256):
        self.url, self.keys, self.queue_total = url, keys(prefix), queue_total

    async def stream(self, expert: Expert, messages: list[dict], params: GenParams):
        import redis.asyncio as aredis

        r = aredis.Redis.from_url(self.url)
        job_id, queued, answered = uuid.uuid4().hex, False, False
        try:
            if await r.xlen(self.keys["jobs"]) >= self.queue_total:
                raise RateLimited(f"the shared queue is full ({self.queue_total} jobs; CONCLAVE_SCHED_QUEUE_TOTAL): "
                                  "retry after the Retry-After delay", retry_after=5)
            await r.xadd(self.keys["jobs"], {"id": job_id, "expert": expert.to_json(),
                                             "messages": json.dumps(messages), "params": json.dumps(asdict(params))})
            queued = True
            reply = None
            while reply is None:   # short waits, so a client that leaves is noticed promptly
                reply = await r.blpop([self.keys["reply"] + job_id], timeout=1)
            answered = True
            answer = json.loads(reply[1])
            if "error" in answer:
                cls = ERRORS.get(answer.get("code"), UpstreamError)
                raise cls(answer["error"], expert=expert.name)
            if answer["text"]:
                yield Delta(answer["text"])
            yield Delta("", answer["finish_reason"], answer["usage"])
        finally:
            if queued and not answered:
                await asyncio.shield(r.set(self.keys["cancel"] + job_id, 1, ex=3600))
            await r.aclose()

    def stats(self) -> dict:
        return {}

    async def close(self) -> None:
        return None


def answer_payload(deltas: list, error: BaseException | None) -> str:
    if error is not None:
        return json.dumps({"error": getattr(error, "message", str(error)), "code": getattr(error, "code", None)})
    last = next((d for d in reversed(deltas) if getattr(d, "finish_reason", None)), None)
    return json.dumps({"text": "".join(d.text for d in deltas),
                       "finish_reason": last.finish_reason if last else "stop", "usage": last.usage if last else {}})


def params_from(raw: str) -> GenParams:
    data = json.loads(raw)
    data["stop"] = tuple(data.get("stop") or ())
    return GenParams(**data)
