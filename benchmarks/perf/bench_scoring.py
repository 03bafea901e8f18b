"""What prompt scoring (``/v1/completions`` with echo and logprobs) costs on llama.cpp (a benchmark script,
not a test).

    python -m benchmarks.perf.bench_scoring [--repeats 5] [--words 60] [--threads 2] [--json]

For each bundled model, on the worker (no HTTP): the median time of an lm-eval loglikelihood job
(echo, logprobs=1, max_tokens=1) against the same prompt with max_tokens=1 and no logprobs (both read
the whole prompt: the model's prefix cache is reset before each run), and the size
of the logits buffer the scoring job keeps (rows x vocabulary x 4 bytes; dropped after the job).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from experts_registry.bundled import BUNDLED
from service.core.backend import GenParams
from service.core.completions import raw_messages
from service.workers.base import Job
from service.workers.llamacpp_worker import LlamaCppWorker

TEXT = ("The quick brown fox jumps over the lazy dog while the farmer watches from the porch and "
        "wonders whether the rain will come before the harvest is done this year ")


def run_once(worker, expert, prompt: str, params: GenParams) -> tuple[float, float, list]:
    """Wall and CPU seconds (CPU time of all threads: steadier on a busy machine) of one job, and its output."""
    out = []
    job = Job(expert.name, raw_messages(prompt), params, out.append)
    worker.models[expert.name].llm.reset()   # no prefix cache: both cases read the whole prompt
    t0, c0 = time.perf_counter(), time.process_time()
    worker.generate(expert, [job])
    return time.perf_counter() - t0, time.process_time() - c0, out


def measure(name: str, args, home: Path) -> dict:
    expert = BUNDLED[name]
    worker = LlamaCppWorker(home, threads=args.threads)
    worker.load(expert)
    llm = worker.models[name].llm
    prompt = " ".join((TEXT * 10).split()[: args.words])
    plain = GenParams(raw=True, max_tokens=1, temperature=0)
    scoring = GenParams(raw=True, max_tokens=1, temperature=0, echo=True, logprobs=True, top_logprobs=1)
    runs = {"plain": [], "scoring": []}
    for _ in range(args.repeats):   # interleaved, so that a busy neighbour hits both alike
        runs["plain"].append(run_once(worker, expert, prompt, plain))
        runs["scoring"].append(run_once(worker, expert, prompt, scoring))
    tokens = runs["scoring"][-1][2][-1].usage["prompt_tokens"]
    worker.close()
    med = {f"{case}_{what}_ms": round(statistics.median(r[i] for r in rs) * 1000, 1)
           for case, rs in runs.items() for i, what in ((0, "wall"), (1, "cpu"))}
    return {"model": name, "prompt_tokens": tokens, "vocab": llm.n_vocab(), **med,
            "cpu_ratio": round(med["scoring_cpu_ms"] / med["plain_cpu_ms"], 2),
            "buffer_mb": round((tokens + 2) * llm.n_vocab() * 4 / 2**20, 1),
            "logits_all_buffer_mb": round(expert.context_length * llm.n_vocab() * 4 / 2**20, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs per case; the median is reported")
    ap.add_argument("--words", type=int, default=60, help="words in the scored prompt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as home:
        rows = [measure(name, args, Path(home)) for name in ("smollm2", "gemma-3-270m")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["model", "prompt_tokens", "plain_wall_ms", "scoring_wall_ms", "plain_cpu_ms", "scoring_cpu_ms",
            "cpu_ratio", "buffer_mb", "logits_all_buffer_mb"]
    print("  ".join(f"{c:>15}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]!s:>15}" for c in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
