"""Where the gateway finds the aggregation-ability profile (``conclave profile aggregators`` writes it)."""

from __future__ import annotations

from pathlib import Path

from aggregators.profile import best_aggregator, load_profile

PROFILE_NAME = "aggregator_profile.json"


def profile_path(home: Path) -> Path:
    return Path(home) / PROFILE_NAME


def load_aggregator_profile(home: Path) -> dict | None:
    path = profile_path(home)
    return load_profile(path) if path.is_file() else None


__all__ = ["best_aggregator", "load_aggregator_profile", "profile_path"]
