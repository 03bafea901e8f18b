"""The scheduler's queue in Redis Streams: any gateway enqueues, worker processes consume.

    {prefix}sched:jobs           stream of jobs; consumer group ``workers``
    {prefix}sched:reply:{id}     list holding the one answer of a job (JSON), read by the waiting gateway
    {prefix}sched:done:{id}      set once, atomically with the reply: a job is answered exactly once
    {prefix}sched:cancel:{id}    set by the gateway when its client left; workers skip the job
    {prefix}sched:request:{rid}  a request sent with an Idempotency-Key: body digest, job id, expert, route
    {prefix}sched:answer:{id}    the answer of such a request's job, kept for CONCLAVE_SCHED_ANSWER_TTL
    {prefix}sched:tokens:{id}    a streamed job's deltas as they are generated, then its end (``token_stream``)
    {prefix}sched:attempt:{id}   the attempt generating a streamed job now (a lease the worker renews)

A worker reads jobs with XREADGROUP into its own BatchPolicy (so it still groups by expert),
keeps the jobs it holds fresh with a heartbeat (XCLAIM of its own pending entries), and takes
over the jobs of a worker that stopped heart-beating with XAUTOCLAIM.  An answer is published
by a Lua script that sets the done key and pushes the reply only if the done key was unset, so
a job re-run after a crash never answers twice.

A job sent with ``stream: true`` streams: the worker appends its deltas to ``tokens:{id}`` as they
are generated (``token_publish``), the script appends the winning attempt's end there too, and the
gateway forwards them as they arrive, following one attempt (``token_stream``): a second run's tokens
are never spliced after the first run's, and a worker that dies mid-answer gives the client an in-band
error (the job of a request without a key is withdrawn; a keyed one runs again for the retry).  A
request that does not stream waits for the whole answer on ``reply:{id}``.

A keyed request (``service.core.idempotency``) is recorded and enqueued by one script, its answer is
also kept under ``answer:{id}``, and its job is never withdrawn: when the gateway shuts down
before the answer, the client gets a retryable 503 and a retry with the same key, on any gateway,
collects the answer (or waits for it) instead of queueing again.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import suppress
from dataclasses import asdict, dataclass

from experts_registry.errors import (ContextLengthExceeded, DependencyUnavailable, ExpertUnavailable, InvalidRequest,
                                     RateLimited, ShuttingDown, UpstreamError)
from experts_registry.model import Expert

from ..core.backend import Delta, GenParams, merge_tool_calls
from ..core.idempotency import HEADER, Ticket, check_same_body
from ..core.redis_retry import is_redis_down, unavailable
from .placement import ADMIT, base_of, moved_key
from .token_stream import Follower

GROUP = "workers"
# KEYS: done, reply, [answer, request]; ARGV: worker, answer, ttl, job id, [token stream, attempt, deltas sent]
PUBLISH = """
local ttl = tonumber(ARGV[3]) or 3600
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ttl) then
  redis.call('RPUSH', KEYS[2], ARGV[2]); redis.call('EXPIRE', KEYS[2], 600)
  if ARGV[5] and ARGV[5] ~= '' then
    redis.call('XADD', ARGV[5], '*', 'a', ARGV[6], 'n', ARGV[7], 'e', ARGV[2]); redis.call('EXPIRE', ARGV[5], 600)
  end
  if KEYS[3] then
    redis.call('SET', KEYS[3], ARGV[2], 'EX', ttl)
    if redis.call('HGET', KEYS[4], 'job') == ARGV[4] then redis.call('EXPIRE', KEYS[4], ttl) end
  end
  return 1
end
return 0
"""
# KEYS: request record, jobs stream; ARGV: ttl, body digest, job id, expert, route, then the job's fields
ENQUEUE = """
local known = redis.call('HMGET', KEYS[1], 'body', 'job', 'expert', 'route', 'entry')
if known[1] then return known end
local entry = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 6))
redis.call('HSET', KEYS[1], 'body', ARGV[2], 'job', ARGV[3], 'expert', ARGV[4], 'route', ARGV[5], 'entry', entry)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return false
"""
FORGET = "if redis.call('HGET', KEYS[1], 'job') == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
ERRORS = {"expert_unavailable": ExpertUnavailable, "context_length_exceeded": ContextLengthExceeded}
POLL_S = 0.5   # longest blocking read: a client that leaves, or a shutdown, is noticed within it


def keys(prefix: str) -> dict[str, str]:
    base = prefix + "sched:"
    return {"jobs": base + "jobs", "reply": base + "reply:", "done": base + "done:", "cancel": base + "cancel:",
            "request": base + "request:", "answer": base + "answer:", "tokens": base + "tokens:",
            "lease": base + "attempt:"}


@dataclass
class Recorded:
    """A keyed request found in Redis: its job, the expert and route it was sent to, whether it is answered."""
    body: str
    job: str
    expert: Expert
    route: dict | None
    entry: str
    answered: bool = False
    stream: str | None = None   # the expert's stream once a worker moved the job there (``placement``)

    @classmethod
    def of(cls, fields: list) -> "Recorded | None":
        if not fields or fields[0] is None:
            return None
        body, job, expert, route, entry, *stream = (f.decode() if isinstance(f, bytes) else f for f in fields)
        return cls(body, job, Expert.from_json(expert), json.loads(route), entry, stream=(stream or [None])[0])


class RedisFront:
    """The gateway side: ``stream`` enqueues a job and yields its deltas as a worker publishes them
    (``params.stream``), or its one answer once it is whole."""

    def __init__(self, url: str, prefix: str, queue_total: int = 256, answer_ttl: int = 3600):
        self.url, self.keys, self.queue_total, self.answer_ttl = url, keys(prefix), queue_total, answer_ttl
        self.prefix = prefix
        self.deadline: float | None = None   # time.monotonic() at which waiting requests get a 503 (shutdown)

    def drain(self, deadline: float) -> None:
        """The server is shutting down: requests still waiting at ``deadline`` are answered 503 (keyed
        ones stay queued for a retry; the others are withdrawn)."""
        self.deadline = deadline if self.deadline is None else min(self.deadline, deadline)

    async def stream(self, expert: Expert, messages: list[dict], params: GenParams, ticket: Ticket | None = None):
        r = self._redis()
        job_id, queued, answered, entry = uuid.uuid4().hex, False, False, None
        try:
            if await self._queued(r, expert) >= self.queue_total:
                raise RateLimited(f"the shared queue is full ({self.queue_total} jobs; CONCLAVE_SCHED_QUEUE_TOTAL): "
                                  "retry after the Retry-After delay", retry_after=5)
            fields = {"id": job_id, "expert": expert.to_json(), "messages": json.dumps(messages),
                      "params": json.dumps(asdict(params)), "ttl": str(self.answer_ttl)}
            if ticket is None:
                entry = await r.xadd(self.keys["jobs"], fields)
            else:
                twin = await self._enqueue(r, ticket, expert, {**fields, "request": ticket.rid})
                if twin is not None:   # the same key arrived a moment earlier: its answer is this one's
                    check_same_body(ticket, twin.body)
                    job_id = twin.job
            queued = True
            if params.stream:
                async for delta in self._streamed(r, job_id, expert.name, ticket and ticket.rid, entry):
                    yield delta
            else:
                for delta in _deltas(await self._answer(r, job_id, expert.name, ticket and ticket.rid, entry)):
                    yield delta
            answered = True
        finally:
            if queued and not answered and ticket is None:
                with suppress(Exception):   # Redis away: the job went with it, or a worker answers no one
                    await asyncio.shield(r.set(self.keys["cancel"] + job_id, 1, ex=3600))
            await r.aclose()

    async def find(self, ticket: Ticket) -> Recorded | None:
        """The request recorded under ``ticket`` (422 if its body differs), or None when it is unknown,
        expired, or its job left the queue unanswered (then the key starts afresh)."""
        r = self._redis()
        try:
            rec = Recorded.of(await r.hmget(self.keys["request"] + ticket.rid, "body", "job", "expert", "route",
                                            "entry", "stream"))
            if rec is None:
                return None
            check_same_body(ticket, rec.body)
            rec.answered = bool(await r.exists(self.keys["answer"] + rec.job))
            if rec.answered or await r.xrange(rec.stream or self.keys["jobs"], rec.entry, rec.entry):
                return rec
            rec.answered = bool(await r.exists(self.keys["answer"] + rec.job))   # answered in between?
            if rec.answered:
                return rec
            await r.eval(FORGET, 1, self.keys["request"] + ticket.rid, rec.job)   # lost (stream trimmed, flushed)
            return None
        finally:
            await r.aclose()

    async def answer_of(self, ticket: Ticket, rec: Recorded):
        """The answer of a recorded request: at once if stored, else when a worker publishes it."""
        r = self._redis()
        try:
            for delta in _deltas(await self._answer(r, rec.job, rec.expert.name, ticket.rid)):
                yield delta
        finally:
            await r.aclose()

    async def _queued(self, r, expert: Expert) -> int:
        """Jobs queued in the cluster; ExpertUnavailable (503) when live workers are registered and none
        of them can host ``expert`` (with no live worker at all, the job waits for one)."""
        total, live, kinded, fit = await r.eval(ADMIT, 0, base_of(self.prefix), expert.memory_mb or "",
                                                self.keys["jobs"], expert.backend)
        if live and not kinded:
            raise ExpertUnavailable(f"expert {expert.name!r} is a {expert.backend} expert and none of the {live} live "
                                    f"workers runs {expert.backend} experts: start `conclave worker --kind "
                                    f"{expert.backend}`", expert=expert.name)
        if live and not fit:
            raise ExpertUnavailable(f"expert {expert.name!r} needs {expert.memory_mb} MB and none of the {live} live "
                                    "workers can host it (CONCLAVE_WORKER_MEMORY_MB): start a worker with room for "
                                    "it or pick another expert", expert=expert.name)
        return int(total)

    def _redis(self):
        import redis.asyncio as aredis

        return aredis.Redis.from_url(self.url)

    async def _enqueue(self, r, ticket: Ticket, expert: Expert, fields: dict) -> Recorded | None:
        """Record the keyed request and enqueue its job in one step; the earlier record if there is one."""
        flat = [x for kv in fields.items() for x in kv]
        known = await r.eval(ENQUEUE, 2, self.keys["request"] + ticket.rid, self.keys["jobs"], self.answer_ttl,
                             ticket.body, fields["id"], expert.to_json(), json.dumps(ticket.route), *flat)
        return Recorded.of(known)

    async def _answer(self, r, job_id: str, expert: str, rid: str | None, entry=None) -> dict:
        """Wait for a job's answer; an error answer forgets a keyed request, so that a retry runs again."""
        return await self._checked(r, await self._wait(r, job_id, kept=rid is not None, entry=entry), job_id, expert,
                                   rid)

    async def _checked(self, r, answer: dict, job_id: str, expert: str, rid: str | None) -> dict:
        if "error" in answer:
            if rid is not None:
                await r.eval(FORGET, 1, self.keys["request"] + rid, job_id)
            if answer.get("code") == "invalid_request":   # the caller's mistake, found by the worker: a 400
                raise InvalidRequest(answer["error"], param=answer.get("param"))
            raise ERRORS.get(answer.get("code"), UpstreamError)(answer["error"], expert=expert)
        return answer

    async def _streamed(self, r, job_id: str, expert: str, rid: str | None, entry=None):
        """A streamed job's deltas as its worker publishes them (one attempt, see ``token_stream``)."""
        key, follow = self.keys["tokens"] + job_id, Follower(expert, kept=rid is not None)
        while True:
            try:
                got = await r.xread({key: follow.last}, count=256, block=int(self._timeout(follow.kept) * 1000))
                if not got:
                    got = await self._stalled(r, job_id, follow, entry)
                    if got is None:
                        continue
            except Exception as exc:   # Redis away mid-answer: a 503 before the first token, else in-band
                if is_redis_down(exc):
                    raise unavailable(exc) from exc
                raise
            for entry_id, fields in (got[0][1] if got else []):
                deltas, answer = follow.take(entry_id, fields)
                for delta in deltas:
                    yield delta
                if answer is not None:
                    answer = await self._checked(r, answer, job_id, expert, rid)
                    for delta in ([] if follow.forwarded else _deltas(answer)):
                        yield delta
                    with suppress(Exception):   # nobody else reads them (a keyed twin may: its tokens stay)
                        await r.delete(self.keys["reply"] + job_id, *([] if rid else [key]))
                    return

    async def _stalled(self, r, job_id: str, follow: Follower, entry):
        """Nothing new for a while: the entries that arrived just now, or None to wait on; raises when
        the worker died mid-answer (its lease is gone) or the job is lost."""
        if follow.kept and not follow.forwarded and (stored := await r.get(self.keys["answer"] + job_id)):
            return [(None, [("0-0", {"a": follow.attempt or "", "n": 0, "e": stored})])]
        died = follow.forwarded and _s(await r.get(self.keys["lease"] + job_id)) != follow.attempt
        lost = not died and entry is not None and not await self._queued_still(r, entry)
        if not (died or lost):
            return None
        got = await r.xread({self.keys["tokens"] + job_id: follow.last}, count=256)   # published in between?
        if got:
            return got
        if died:
            raise follow.lost("no heartbeat")
        raise DependencyUnavailable("your queued request was lost: Redis restarted without keeping its "
                                    "queue (no AOF); retry it", retry_after=1)

    def _timeout(self, kept: bool) -> float:
        """How long one blocking read may wait: POLL_S, less near the shutdown deadline (503 there)."""
        left = None if self.deadline is None else self.deadline - time.monotonic()
        if left is not None and left <= 0:
            raise _shutdown(kept)
        return POLL_S if left is None else min(POLL_S, max(left, 0.01))

    async def _wait(self, r, job_id: str, kept: bool, entry=None) -> dict:
        while True:
            if kept and (stored := await r.get(self.keys["answer"] + job_id)) is not None:
                return json.loads(stored)
            timeout = self._timeout(kept)
            reply = await r.blpop([self.keys["reply"] + job_id], timeout=timeout)
            if reply is not None:
                return json.loads(reply[1])
            if entry is not None and not await self._queued_still(r, entry):
                reply = await r.lpop(self.keys["reply"] + job_id)   # answered just now, or lost with Redis
                if reply is not None:
                    return json.loads(reply)
                raise DependencyUnavailable("your queued request was lost: Redis restarted without keeping its "
                                            "queue (no AOF); retry it", retry_after=1)

    async def _queued_still(self, r, entry: str) -> bool:
        """Whether the job is still in the intake, or in the expert's stream a worker moved it to."""
        if await r.xrange(self.keys["jobs"], entry, entry):
            return True
        entry = entry.decode() if isinstance(entry, bytes) else entry
        moved = await r.get(moved_key(self.prefix, entry))
        if moved is None:
            return False
        stream, _, new = (moved.decode() if isinstance(moved, bytes) else moved).partition("|")
        return bool(await r.xrange(stream, new, new))

    async def close(self) -> None:
        return None


def _shutdown(kept: bool) -> ShuttingDown:
    if kept:
        return ShuttingDown(f"the gateway is restarting before your answer came; the request stays queued and "
                            f"will be answered: retry with the same {HEADER} header to collect its answer")
    return ShuttingDown(f"the gateway is restarting and your queued request was withdrawn: retry it (sent with an "
                        f"{HEADER} header, a queued request survives a restart)")


def _s(x) -> str | None:
    return x.decode() if isinstance(x, bytes) else x


def _deltas(answer: dict) -> list[Delta]:
    """A whole answer as deltas: its text (with tool calls and logprobs, in the streamed shape), then the end."""
    calls = [{**c, "index": i} for i, c in enumerate(answer.get("tool_calls") or ())] or None
    body = Delta(answer["text"], tool_calls=calls, logprobs=answer.get("logprobs"))
    return ([body] if body.text or calls or body.logprobs else []) + [Delta("", answer["finish_reason"],
                                                                           answer["usage"])]


def answer_payload(deltas: list, error: BaseException | None) -> str:
    if error is not None:
        return json.dumps({"error": getattr(error, "message", str(error)), "code": getattr(error, "code", None),
                           "param": getattr(error, "param", None)})
    calls: dict[int, dict] = {}
    for d in deltas:
        merge_tool_calls(calls, d.tool_calls or ())
    last = next((d for d in reversed(deltas) if getattr(d, "finish_reason", None)), None)
    answer = {"text": "".join(d.text for d in deltas), "finish_reason": last.finish_reason if last else "stop",
              "usage": last.usage if last else {}}
    if calls:
        answer["tool_calls"] = [calls[i] for i in sorted(calls)]
    if any(d.logprobs for d in deltas):
        answer["logprobs"] = [x for d in deltas for x in d.logprobs or ()]
    return json.dumps(answer)


def params_from(raw: str) -> GenParams:
    data = json.loads(raw)
    data["stop"] = tuple(data.get("stop") or ())
    return GenParams(**data)
