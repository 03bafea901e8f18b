"""Token streams through Redis: how a job's deltas travel from a worker to the waiting gateway.

    {prefix}sched:tokens:{id}    a short-lived stream per streamed job (expires 600 s after its last write)
    {prefix}sched:attempt:{id}   the attempt generating it now (PX = the worker's reclaim time, renewed)

Every run of a job is an *attempt*, named ``{worker}#{boot}-{k}`` (the worker's name, a random tag
per process, a counter).  A worker appends entries ``a`` (attempt), ``n`` (index of the entry's first
delta within the attempt) and ``d`` (a JSON list of deltas: text, finish_reason, usage, tool_calls,
logprobs); the exactly-once script that publishes the answer appends the last entry, ``a``, ``n``
(deltas sent) and ``e`` (the answer, or the error), only for the attempt that wins.

The gateway follows one attempt (``Follower``, pure): it forwards the deltas of the first attempt that
sends any, skips deltas it already has (an entry re-sent after a failed write carries the same ``n``),
and ends at that attempt's ``e``.  An entry of another attempt after deltas were forwarded, or an
attempt lease that is gone (the worker stopped heart-beating), means the answer cannot be completed
without splicing two runs: the client gets an in-band error instead (``UpstreamError``, code
``worker_lost``).
"""

from __future__ import annotations

import json
from dataclasses import asdict

from experts_registry.errors import UpstreamError

from ..core.backend import Delta

TOKENS_TTL_S = 600


def delta_json(d: Delta) -> dict:
    """A delta as the JSON an entry carries: only the fields that are set."""
    return {k: v for k, v in asdict(d).items() if v not in (None, "")}


def delta_of(x: dict) -> Delta:
    return Delta(**x)


def worker_of(attempt: str) -> str:
    return attempt.rpartition("#")[0] or attempt


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else x


class Follower:
    """The gateway's view of one streamed job: which attempt it follows and how many deltas it took."""

    def __init__(self, expert: str, kept: bool):
        self.expert, self.kept = expert, kept
        self.attempt: str | None = None
        self.next = 0          # deltas of ``attempt`` handed on so far
        self.last = "0-0"      # the last entry read

    @property
    def forwarded(self) -> bool:
        return self.next > 0

    def take(self, entry_id, fields: dict) -> tuple[list[Delta], dict | None]:
        """The new deltas of one entry, and the answer when the entry is the job's end."""
        self.last = _s(entry_id)
        f = {_s(k): _s(v) for k, v in fields.items()}
        attempt, n = f["a"], int(f["n"])
        if attempt != self.attempt:
            if self.forwarded:
                raise self.lost(f"its job is running again as attempt {attempt}")
            self.attempt = attempt
        if "e" in f:
            if self.forwarded and n != self.next:
                raise self.lost(f"{n} pieces were published, {self.next} arrived")
            return [], json.loads(f["e"])
        if n > self.next:
            raise self.lost(f"pieces {self.next}-{n - 1} never arrived")
        fresh = [delta_of(x) for x in json.loads(f["d"])][self.next - n:]
        self.next += len(fresh)
        return fresh, None

    def lost(self, why: str) -> UpstreamError:
        what = (f"the worker generating this answer ({worker_of(self.attempt or '?')}) stopped mid-answer ({why}); "
                "the text received so far is incomplete: ")
        if self.kept:
            what += "retry with the same Idempotency-Key header to collect the whole answer (the job runs again)"
        else:
            what += "send the request again"
        return UpstreamError(what, expert=self.expert, code="worker_lost")
