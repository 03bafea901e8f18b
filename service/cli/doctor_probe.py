"""What ``conclave doctor`` runs in a child process: code that may crash the interpreter.

A native library built for the wrong CPU dies with SIGSEGV or SIGILL, taking its
process with it; run here, it takes only the child, and the doctor reports it.

    python -m service.cli.doctor_probe llama                     # llama.cpp version and kernels (JSON)
    python -m service.cli.doctor_probe generate EXPERT_JSON HOME TOKENS
    python -m service.cli.doctor_probe encoder                   # one MiniLM embedding

Each prints one JSON object on its last stdout line and exits 0, or exits 1 with
the error on stderr.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def llama() -> dict:
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    return {"version": llama_cpp.__version__, "system_info": info.strip(),
            "package_dir": str(Path(llama_cpp.__file__).parent)}


def generate(expert_json: str, home: str, tokens: str) -> dict:
    from experts_registry.model import Expert

    from ..workers.llamacpp_worker import _load, _render

    expert = Expert.from_json(expert_json)
    t0 = time.perf_counter()
    model = _load(expert, Path(home), threads=None)
    loaded = time.perf_counter() - t0
    prompt, stop = _render(model, expert, [{"role": "user", "content": "What is 2+2?"}])
    out = model.llm.create_completion(prompt, max_tokens=int(tokens), stop=stop or None, temperature=0.0)
    model.llm.close()
    return {"load_s": round(loaded, 3), "text": out["choices"][0]["text"],
            "completion_tokens": out["usage"]["completion_tokens"]}


def encoder() -> dict:
    from router.encoder import MiniLMEncoder

    enc = MiniLMEncoder(threads=1)
    t0 = time.perf_counter()
    vec = enc.encode(["Which planet is the largest?"])
    return {"name": enc.name, "dim": int(vec.shape[1]), "seconds": round(time.perf_counter() - t0, 3)}


PROBES = {"llama": llama, "generate": generate, "encoder": encoder}


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if not argv or argv[0] not in PROBES:
        print(f"usage: python -m service.cli.doctor_probe {{{','.join(PROBES)}}} [args]", file=sys.stderr)
        return 2
    try:
        result = PROBES[argv[0]](*argv[1:])
    except Exception as exc:  # reported by the parent as this check's failure
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
