"""The request pipeline shared by the HTTP server and ``conclave chat``:
resolve the model (an expert, or a virtual model through a router), call the
expert's backend under a deadline, account for it in metrics."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from typing import AsyncIterator

from experts_registry import Store
from experts_registry.store import CachedStore
from experts_registry.errors import (ConfigError, ExpertNotFound, ExpertTimeout, ExpertUnavailable, InvalidRequest,
                                     ModelNotFound,
                                     PermissionDenied, ShuttingDown, UpstreamError, ValidationFailed)
from experts_registry.model import Expert
from router import Decision
from router.adaptive import Stopping
from router.correct import AUTO

from ..backends import BackendPool, Delta, GenParams, Generation, collect
from ..core.config import VIRTUAL_AUTO, VIRTUAL_MOE, Settings
from ..core.idempotency import Ticket
from ..core.metrics import Metrics
from ..core.openai_fields import request_fields
from ..core.protocol import ChatRequest
from . import capabilities, fanout, honoured
from .adaptive import ask_until_clear, weighted_plan
from .aggregator_profile import best_aggregator, load_aggregator_profile
from .decisions import DecisionLog
from .keywords import extract_keywords
from .reliability import Breakers, backoff_delay
from .routing import DEFAULT_UNTRAINED, RouterHost
from .structured import ask_and_vote, structured

VIRTUAL_MODELS = {
    VIRTUAL_AUTO: "routes each request to the best expert with the configured router",
    VIRTUAL_MOE: "asks the router's top k experts (CONCLAVE_MOE_K) and aggregates their answers",
}


@dataclass
class Routed:
    expert: Expert
    decision: Decision | None
    aggregation: fanout.Aggregation | None = None
    with_candidates: bool = False
    failed: dict[str, str] = field(default_factory=dict)   # experts that failed before a fallback
    pool: dict[str, Expert] = field(default_factory=dict, repr=False)   # the experts it was routed among
    excluded: dict[str, str] = field(default_factory=dict)   # experts that cannot serve it, and why

    def info(self) -> dict:
        info = {"expert": self.expert.name}
        if self.decision is not None:
            info["route"] = self.decision.to_dict()
            if self.excluded:
                info["route"]["excluded"] = self.excluded
        if self.aggregation is not None:
            info["aggregation"] = self.aggregation.info(self.with_candidates)
        if self.failed:
            info["fallback_from"] = self.failed
        return info


class Gateway:
    def __init__(self, settings: Settings, store: Store, backends: BackendPool, metrics: Metrics | None = None):
        self.settings = settings
        self.store = CachedStore(store, settings.expert_cache_seconds) if settings.expert_cache_seconds > 0 else store
        self.backends = backends
        self.metrics = metrics or Metrics()
        self.breakers = Breakers(settings.breaker_failures, settings.breaker_cooldown)
        self.routers = RouterHost(settings)
        self.decisions = DecisionLog(settings.ui_decisions, settings.ui_show_prompts)   # for the dashboard
        self.draining = False   # SIGTERM came: /health/readiness fails so load balancers move on

    async def resolve(self, req: ChatRequest, allowed: tuple[str, ...] = ()) -> Routed:
        if req.model in VIRTUAL_MODELS:
            return await self.route(req, allowed)
        try:
            expert = self.store.get(req.model)
        except ExpertNotFound:
            raise ModelNotFound(f"the model {req.model!r} does not exist: GET /v1/models lists the experts "
                                f"and the virtual models {', '.join(VIRTUAL_MODELS)}", param="model") from None
        capabilities.check_expert(expert, capabilities.needs(req))
        return Routed(expert, None)

    async def route(self, req: ChatRequest, allowed: tuple[str, ...] = (), record: bool = True) -> Routed:
        """Route over the registered experts (only those in ``allowed``, when the key is restricted).
        ``record=False``: a preview (the dashboard's playground), neither counted nor kept."""
        opts = req.conclave
        text = req.prompt_text()
        if not text.strip():
            raise InvalidRequest("the prompt is empty: a routed request needs a user message with text",
                                 param="messages")
        pool = [e for e in self.store.list() if not allowed or e.name in allowed]
        if not pool:
            raise PermissionDenied("none of the experts this API key may use is registered", param="model")
        wants = capabilities.needs(req)   # only experts that can serve the request are candidates
        candidates, excluded = capabilities.serviceable(pool, wants)
        if not candidates:
            raise capabilities.refuse_none(pool, wants)
        k = opts.k if opts and opts.k else (self.settings.moe_k if req.model == VIRTUAL_MOE else 1)
        k = AUTO if k == "auto" else k
        name = (opts.router if opts else None) or self.routers.default_name()
        decision = await self._route_among(name, text, candidates, k, excluded, await self._keywords(name, text))
        by_name = {e.name: e for e in candidates}
        chosen = decision.experts[0]
        if chosen not in by_name:
            raise ConfigError(f"router {decision.router!r} chose {chosen!r}, which is not registered: "
                              "retrain the router or register the expert")
        if record:
            self.metrics.routed.labels(decision.router, chosen).inc()
            self.decisions.record(decision, text, req.model, time.time())
        return Routed(by_name[chosen], decision, with_candidates=bool(opts and opts.return_candidates),
                      pool=by_name, excluded=excluded)

    async def _route_among(self, name: str, text: str, candidates, k, excluded: dict, keywords: dict) -> Decision:
        """Route among the experts that can serve the request.  When the capability filter left only
        experts a trained router never saw, it cannot rank them: the untrained 'declared' router does."""
        try:
            return await self.routers.route(name, text, candidates, k, keywords)
        except ConfigError:
            if not excluded or name == DEFAULT_UNTRAINED:
                raise
        decision = await self.routers.route(DEFAULT_UNTRAINED, text, candidates, k)
        return replace(decision, reason=f"the {name} router knows none of the experts that can serve this "
                                        f"request; {decision.reason}")

    async def _keywords(self, router: str, text: str) -> dict:
        """Symbolic-MoE's LLM keyword extraction, when configured (CONCLAVE_KEYWORD_EXPERT) for skills."""
        if router != "skills" or not self.settings.keyword_expert:
            return {}
        expert = self.store.get(self.settings.keyword_expert)
        words = await extract_keywords(self.call, expert, text, n=self.settings.keyword_samples)
        return {"skills": words} if words else {}

    def params(self, req: ChatRequest) -> GenParams:
        if req.max_tokens is not None and req.max_completion_tokens is not None:
            raise InvalidRequest("send max_completion_tokens or the older max_tokens, not both: drop max_tokens",
                                 param="max_tokens")
        field = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        wanted = req.max_completion_tokens or req.max_tokens
        if wanted is not None and wanted > self.settings.max_tokens_cap:
            raise InvalidRequest(f"{field} {wanted} is above this gateway's cap of "
                                 f"{self.settings.max_tokens_cap} (CONCLAVE_MAX_TOKENS_CAP)", param=field)
        if len(req.messages) > self.settings.max_messages:
            raise InvalidRequest(f"too many messages ({len(req.messages)} > {self.settings.max_messages})",
                                 param="messages")
        return GenParams(max_tokens=wanted or self.settings.default_max_tokens, temperature=req.temperature,
                         top_p=req.top_p, stop=tuple(req.stop or ()), seed=req.seed, stream=req.stream,
                         **request_fields(req))

    async def open_stream(self, req: ChatRequest, allowed: tuple[str, ...] = (),
                          ticket: Ticket | None = None) -> tuple[Routed, AsyncIterator[Delta]]:
        """Resolve the request and start the answer; errors before the first token raise here.
        With a ticket (an Idempotency-Key) and the Redis queue, a request recorded before is answered
        from its job instead of running again; aggregated requests run again."""
        queue = self._queue() if ticket is not None else None
        if queue is not None and (rec := await self._recorded(queue, ticket)) is not None:
            return Routed(rec.expert, rec.route and Decision.from_dict(rec.route)), self._resumed(queue, ticket, rec)
        routed = await self.resolve(req, allowed)
        params = self.params(req)
        messages = [m.wire() for m in req.messages]   # content parts, tool turns and tool_calls kept
        if routed.decision is not None and (routed.decision.k > 1 or routed.decision.stopping is not None):
            return await self._aggregate(req, routed, messages, params)
        ticket = ticket if queue is not None else None
        if routed.decision is None:
            return routed, self.call(routed.expert, messages, params, ticket)
        return await self._with_fallback(routed, messages, params,
                                         ticket and replace(ticket, route=routed.decision.to_dict()))

    def _queue(self):
        """The Redis queue's front when llama.cpp experts are served through it, else None."""
        return self.backends.get("llamacpp") if self.settings.sched_queue == "redis" else None

    def drain(self, deadline: float) -> None:
        """Shutdown began: requests waiting on the Redis queue get a retryable 503 at ``deadline``."""
        self.draining = True
        if (queue := self._queue()) is not None:
            queue.drain(deadline)

    async def _recorded(self, queue, ticket: Ticket):
        try:
            return await queue.find(ticket)
        except ValidationFailed:
            self.metrics.idempotent.labels("conflict").inc()
            raise

    def _resumed(self, queue, ticket: Ticket, rec) -> AsyncIterator[Delta]:
        if rec.answered:   # a stored answer: no expert runs, nothing to account for
            self.metrics.idempotent.labels("stored").inc()
            return queue.answer_of(ticket, rec)
        self.metrics.idempotent.labels("resumed").inc()
        name = rec.expert.name
        return self._guarded(name, queue.answer_of(ticket, rec))

    async def _with_fallback(self, routed: Routed, messages, params,
                             ticket: Ticket | None = None) -> tuple[Routed, AsyncIterator[Delta]]:
        """A routed answer from the chosen expert, or, if it fails before its first token, from the
        next experts of the decision (up to CONCLAVE_FALLBACKS more)."""
        by_name = routed.pool
        order = [c.expert for c in routed.decision.choices if c.expert in by_name]
        failed: dict[str, str] = {}
        for name in order[: self.settings.fallbacks + 1]:
            it = self.call(by_name[name], messages, params, ticket).__aiter__()
            try:
                first = await anext(it, None)
            except UpstreamError as exc:
                failed[name] = exc.message
                last = exc
                continue
            if failed:
                self.metrics.fallbacks.labels(next(iter(failed)), name).inc()
            routed.expert, routed.failed = by_name[name], failed
            return routed, _prepend(first, it)
        raise last

    async def call(self, expert: Expert, messages: list[dict], params: GenParams,
                   ticket: Ticket | None = None) -> AsyncIterator[Delta]:
        """One expert's answer as a stream: under the deadline, counted in the metrics, behind its
        circuit breaker, retried (before the first token only) on retryable upstream errors."""
        breaker = self.breakers.get(expert.name)
        mine = await self._admitted(expert.name, breaker)
        chunks = self._attempts(expert, messages, params, ticket, breaker)
        if honoured.needs_check(params):   # a field the expert ignored is an error, not a different answer
            chunks = honoured.checked(expert, params, chunks)
        try:
            async for delta in chunks:
                yield delta
        finally:
            breaker.release(mine)   # a trial that ended without a verdict hands over to the next caller

    async def _admitted(self, name: str, breaker):
        """Wait (within the expert deadline) while another call is the half-open breaker's trial;
        ExpertUnavailable with the time left when the breaker is open, or the trial outlasts the wait."""
        end = time.monotonic() + self.settings.expert_timeout
        while True:
            mine, trial = breaker.check(name, time.monotonic())
            if trial is None:
                return mine
            left = end - time.monotonic()
            try:
                async with asyncio.timeout(max(left, 0)):
                    await trial.wait()
            except TimeoutError:
                raise ExpertUnavailable(f"expert {name!r} is recovering and its trial call is still running: "
                                        f"retry in {self.settings.expert_timeout:.0f} s", expert=name,
                                        retry_after=max(1.0, self.settings.expert_timeout)) from None

    async def _attempts(self, expert: Expert, messages: list[dict], params: GenParams, ticket, breaker):
        for attempt in range(self.settings.retries + 1):
            chunks = self._stream(expert, messages, params, ticket)
            it = self._guarded(expert.name, chunks)
            try:
                first = await anext(it, None)
            except UpstreamError as exc:
                if not exc.retryable or attempt == self.settings.retries:
                    if breaker.failure(time.monotonic(), exc.message):  # one failure per call, retries included
                        self.metrics.breaker_trips.labels(expert.name).inc()
                    raise
                self.metrics.retries.labels(expert.name).inc()
                await asyncio.sleep(backoff_delay(attempt + 1, exc))
                continue
            breaker.success()
            if first is not None:
                yield first
                async for delta in it:
                    yield delta
            return

    def _stream(self, expert: Expert, messages: list[dict], params: GenParams, ticket: Ticket | None):
        backend = self.backends.for_expert(expert)
        if ticket is not None and backend is self._queue():   # the answer will outlive this process
            self.metrics.idempotent.labels("queued").inc()
            return backend.stream(expert, messages, params, ticket)
        return backend.stream(expert, messages, params)

    async def complete(self, req: ChatRequest, allowed: tuple[str, ...] = (),
                       ticket: Ticket | None = None) -> tuple[Routed, Generation]:
        routed, chunks = await self.open_stream(req, allowed, ticket)
        return routed, await collect(chunks)

    async def _aggregate(self, req, routed: Routed, messages, params) -> tuple[Routed, AsyncIterator[Delta]]:
        opts = req.conclave
        name = (opts.aggregator if opts and opts.aggregator else None) or self._default_aggregator(req)
        agg = fanout.aggregator(name)
        decision = routed.decision
        by_name = {e.name: e for e in self.store.list()}
        experts = [(by_name[c.expert], c.score) for c in decision.choices[: decision.k] if c.expert in by_name]
        chosen = opts.aggregator if opts and opts.aggregator else "vote"   # the default one gives way to a vote
        if structured(params, chosen, decision.stopping is not None):   # tools / JSON mode (structured.py)
            routed.aggregation, winner, answer = await ask_and_vote(self.call, experts, messages, params)
            routed.expert = by_name[winner]
            return routed, answer
        if decision.stopping is not None:
            return await self._adaptive(routed, experts, messages, params)
        candidates, usage = await fanout.ask_all(self.call, experts, messages, params)
        plan = agg.plan(req.prompt_text(), candidates)
        result = fanout.Aggregation(name, candidates, plan.detail, usage)
        routed.aggregation = result
        if isinstance(plan, fanout.Final):
            routed.expert = by_name[plan.winner]
            return routed, fanout.final_text(plan, usage)
        judge = self.aggregator_expert(candidates, by_name)
        result.aggregated_by = judge
        routed.expert = by_name[judge]
        return routed, fanout.plus_usage(self.call(by_name[judge], plan.messages, params), usage)

    async def _adaptive(self, routed: Routed, experts, messages, params) -> tuple[Routed, AsyncIterator[Delta]]:
        """k = "auto": experts in order until the weighted vote is clear (service/pipeline/adaptive.py)."""
        decision = routed.decision
        rule, weights = Stopping(**decision.stopping), list(decision.weights or [1.0] * len(experts))
        candidates, usage = await ask_until_clear(self.call, experts, weights, rule, messages, params)
        plan = weighted_plan(candidates, weights, rule)
        routed.aggregation = fanout.Aggregation("weighted-vote", candidates, plan.detail, usage)
        routed.expert = routed.pool[plan.winner] if plan.winner in routed.pool else routed.expert
        return routed, fanout.final_text(plan, usage)

    def _default_aggregator(self, req: ChatRequest) -> str:
        return self.settings.moe_aggregator if req.model == VIRTUAL_MOE else "first"

    def aggregator_expert(self, candidates, by_name: dict[str, Expert]) -> str:
        """The configured aggregator expert, else the profile's best, else the best-ranked survivor."""
        if self.settings.aggregator_expert:
            if self.settings.aggregator_expert not in by_name:
                raise ConfigError(f"CONCLAVE_AGGREGATOR_EXPERT names {self.settings.aggregator_expert!r}, "
                                  "which is not registered")
            return self.settings.aggregator_expert
        profile = load_aggregator_profile(self.settings.home)
        if profile is not None:  # never hand the synthesis to an expert that just failed
            failed = {c.expert for c in candidates if not c.usable}
            return best_aggregator(profile, [n for n in by_name if n not in failed])
        alive = [c for c in candidates if c.usable] or candidates
        return max(alive, key=lambda c: c.score).expert

    async def _guarded(self, expert: str, chunks: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        """Pass an expert's chunks through under its deadline (CONCLAVE_EXPERT_TIMEOUT for the whole
        answer: ExpertTimeout after it) and count the call in the metrics. One generator for both:
        every layer costs each chunk a few microseconds."""
        seconds = self.settings.expert_timeout
        t0, outcome, usage = time.perf_counter(), "error", None
        end = asyncio.get_running_loop().time() + seconds
        it = chunks.__aiter__()
        try:
            while True:
                try:
                    async with asyncio.timeout_at(end):   # no extra task per chunk, unlike wait_for
                        delta = await it.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise ExpertTimeout(f"expert {expert!r} did not answer within {seconds:g} s "
                                        "(CONCLAVE_EXPERT_TIMEOUT)", expert=expert) from None
                usage = delta.usage or usage
                yield delta
            outcome = "ok"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except ExpertTimeout:
            outcome = "timeout"
            raise
        except ShuttingDown:
            outcome = "shutdown"
            raise
        finally:
            try:
                await it.aclose()
            finally:
                self.metrics.expert_done(expert, outcome, time.perf_counter() - t0, usage)


async def _prepend(first: Delta | None, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    try:
        if first is not None:
            yield first
            async for delta in rest:
                yield delta
    finally:
        await rest.aclose()
