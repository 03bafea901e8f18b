"""Fitted router state on disk: ``arrays.npz`` + ``meta.json`` (+ ``*.joblib`` for sklearn models).

``meta.json`` always carries ``router`` (the name it was fitted for) and
``format``; training adds what the state was fit on and its validation scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from experts_registry.errors import ConfigError

FORMAT = 1


def not_trained(router: str, folder: str | Path | None) -> ConfigError:
    where = f" at {folder}" if folder else ""
    how = ("'conclave profile build' (live) or 'conclave profile build --replay'" if router == "skills"
           else f"'conclave router train {router}'")
    return ConfigError(f"router {router!r} has no trained state{where}: build it with {how}", param="router")


def save_state(folder: str | Path, router: str, arrays: Mapping[str, np.ndarray],
               meta: Mapping[str, Any], objects: Mapping[str, Any] | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "arrays.npz", **{k: np.asarray(v) for k, v in arrays.items()})
    for key, obj in (objects or {}).items():
        import joblib
        joblib.dump(obj, folder / f"{key}.joblib")
    full = {"router": router, "format": FORMAT, **meta, "objects": sorted(objects or {})}
    (folder / "meta.json").write_text(json.dumps(full, indent=1, sort_keys=True, default=_jsonable))
    return folder


def load_state(folder: str | Path | None, router: str) -> tuple[dict, dict, dict]:
    """Return ``(arrays, meta, objects)``; a clear ConfigError when it is missing or foreign."""
    if not folder or not (Path(folder) / "meta.json").is_file():
        raise not_trained(router, folder)
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        with np.load(folder / "arrays.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"router state at {folder} is unreadable ({exc}): retrain it with "
                          f"'conclave router train {router} --out {folder}'", param="router") from exc
    if meta.get("router") != router:
        raise ConfigError(f"the state at {folder} was trained for router {meta.get('router')!r}, "
                          f"not {router!r}", param="router")
    objects = {}
    for key in meta.get("objects", []):
        import joblib
        objects[key] = joblib.load(folder / f"{key}.joblib")
    return arrays, meta, objects


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in meta.json")
