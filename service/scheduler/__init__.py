"""Expert-batched scheduling: a pure policy (``policy``), the in-process scheduler over worker
threads (``local``), and the offline grouped schedule for benchmark runs (``offline``).
May import workers and core (never backends, pipeline, http, cli)."""

from .policy import POLICIES, BatchPolicy, FcfsPolicy, Pending, Pick, group_by_expert

__all__ = ["POLICIES", "BatchPolicy", "FcfsPolicy", "Pending", "Pick", "group_by_expert"]
