"""Routers at serving time: loaded once from their trained state, fed one cached embedding per request.

Routers stay pure: this host does the I/O (loading state, embedding the prompt in
a worker thread) and hands ``route()`` everything it needs.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from experts_registry.errors import ConfigError, InvalidRequest, RouterUnavailable
from experts_registry.model import Expert
from router import ROUTERS, Decision, RouteRequest
from router.correct import AUTO

from ..core.config import Settings

TRAINED = ("skills", "coe", "knn", "correct")
DEFAULT_TRAINED, DEFAULT_UNTRAINED = "correct", "declared"
log = logging.getLogger("conclave.routing")


def router_dir(settings: Settings) -> Path:
    return settings.home / "routers"


class RouterHost:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._routers: dict[str, object] = {}
        self._encoders: dict[str, object] = {}

    def default_name(self) -> str:
        """CONCLAVE_ROUTER, else the correctness router once trained ('conclave router train correct'),
        else 'declared' (declared skills and descriptions by embedding)."""
        if self.settings.router:
            return self.settings.router
        trained = (router_dir(self.settings) / DEFAULT_TRAINED / "meta.json").is_file()
        return DEFAULT_TRAINED if trained else DEFAULT_UNTRAINED

    def get(self, name: str | None = None):
        """The router by name (default: :meth:`default_name`), loading its trained state on first use."""
        name = name or self.default_name()
        if name not in ROUTERS:
            raise InvalidRequest(f"unknown router {name!r}; available: {', '.join(sorted(ROUTERS))}", param="router")
        if name not in self._routers:
            options = {"generalist": self.settings.generalist}
            if name in TRAINED:
                options["state"] = str(router_dir(self.settings) / name)
            try:
                self._routers[name] = ROUTERS[name](**options)
            except ConfigError as exc:   # never trained, or its state is unreadable: the log has the path
                log.warning("router %s cannot load: %s", name, exc.message)
                how = ("'conclave profile build' (or 'conclave profile build --replay')" if name == "skills"
                       else f"'conclave router train {name}'")
                raise RouterUnavailable(
                    f"router {name!r} is not trained on this gateway: an operator builds it with {how}; "
                    "until then name another router (e.g. 'tags', which needs no training)", param="conclave.router") from None
        return self._routers[name]

    def encoder(self, name: str):
        if name not in self._encoders:
            from router.encoder import CachedEncoder, get_encoder

            options = {} if name.startswith("hashing-") else {"threads": 1}  # one thread: see docs/performance.md
            self._encoders[name] = CachedEncoder(get_encoder(name, **options))
        return self._encoders[name]

    def expert_vectors(self, router, candidates: Sequence[Expert]) -> dict:
        """Each candidate's declared skills and description, embedded (cached per text)."""
        from router.declared import expert_texts

        enc = self.encoder(router.encoder)
        return {e.name: np.stack([enc.encode_one(t) for t in texts])
                for e in candidates if (texts := expert_texts(e))}

    def embed(self, router, text: str):
        if not getattr(router, "needs_embedding", False):
            return None
        return self.encoder(getattr(router, "encoder", None) or "all-minilm-l6-v2").encode_one(text)

    async def route(self, name: str | None, text: str, candidates: Sequence[Expert], k: int,
                    metadata: dict | None = None) -> Decision:
        """Embed (once, cached) what the router needs, then route. ``metadata["skills"]`` holds
        keywords from the LLM extractor, if one ran; they are embedded for nearest-skill matching."""
        router = self.get(name)
        metadata = dict(metadata or {})
        embedding = await self._off_loop(router, self.embed, router, text) if router.needs_embedding else None
        if getattr(router, "needs_expert_vectors", False):
            metadata["expert_vectors"] = await self._off_loop(router, self.expert_vectors, router, candidates)
        if metadata.get("skills") and router.needs_embedding:
            enc = self.encoder(getattr(router, "encoder", None) or "all-minilm-l6-v2")
            metadata["skill_embeddings"] = await self._off_loop(router, enc.encode, list(metadata["skills"]))
        decision = router.route(RouteRequest(text=text, embedding=embedding, metadata=metadata), candidates, k=k)
        if k == AUTO and decision.stopping is None:
            raise InvalidRequest(f"k \"auto\" needs a router that predicts correctness: the {decision.router!r} "
                                 "router cannot; use \"router\": \"correct\" (train it with 'conclave router "
                                 "train correct') or a number", param="conclave.k")
        return decision

    async def _off_loop(self, router, fn, *args):
        """``fn(*args)`` in a thread when the router's encoder is slow (MiniLM: tens of ms); on the
        event loop when it is not (the static encoder: a thread hop would cost more than the work)."""
        name = getattr(router, "encoder", None) or "all-minilm-l6-v2"
        if self.encoder(name).inline:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    def loaded(self, name: str | None = None) -> bool:
        """Whether the router (default: the configured one) is loaded and ready to route."""
        return (name or self.default_name()) in self._routers

    def warm(self) -> None:
        """Load the configured router and its encoder now (at start), so a bad config fails fast;
        BLAS keeps to one thread in this process (routing's products are small)."""
        from router.knn import limit_blas_threads

        limit_blas_threads(1)
        router = self.get()
        self.embed(router, "warm-up")
