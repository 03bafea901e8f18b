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


def timed(worker, expert, prompt: str, params: GenParams, repeats: int) -> tuple[float, float, list]:
    """Median wall and CPU seconds (CPU time, all threads: steadier on a busy machine) and the last output."""
    times, cpu, out = [], [], []
    for _ in range(repeats):
        out = []
        job = Job(expert.name, raw_messages(prompt), params, out.append)
        worker.models[expert.name].llm.reset()   # no prefix cache: both cases read the whole prompt
        t0, c0 = time.perf_counter(), time.process_time()
        worker.generate(expert, [job])
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), statistics.median(cpu), out


def measure(name: str, args, home: Path) -> dict:
    expert = BUNDLED[name]
    worker = LlamaCppWorker(home, threads=args.threads)
    worker.load(expert)
    llm = worker.models[name].llm
    prompt = " ".join((TEXT * 10).split()[: args.words])
    plain_s, plain_cpu, _ = timed(worker, expert, prompt, GenParams(raw=True, max_tokens=1, temperature=0),
                                  args.repeats)
    scoring = GenParams(raw=True, max_tokens=1, temperature=0, echo=True, logprobs=True, top_logprobs=1)
    score_s, score_cpu, out = timed(worker, expert, prompt, scoring, args.repeats)
    tokens = out[-1].usage["prompt_tokens"]
    worker.close()
    return {"model": name, "prompt_tokens": tokens, "vocab": llm.n_vocab(), "plain_ms": round(plain_s * 1000, 1),
            "scoring_ms": round(score_s * 1000, 1), "plain_cpu_ms": round(plain_cpu * 1000, 1),
            "scoring_cpu_ms": round(score_cpu * 1000, 1), "cpu_ratio": round(score_cpu / plain_cpu, 2),
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
    print(f"{'model':14} {'tokens':>6} {'plain ms':>9} {'scoring ms':>11} {'plain cpu':>10} {'scoring cpu':>12} "
          f"{'cpu x':>6} {'buffer MB':>10} {'logits_all MB':>14}")
    for r in rows:
        print(f"{r['model']:14} {r['prompt_tokens']:>6} {r['plain_ms']:>9} {r['scoring_ms']:>11} {r['plain_cpu_ms']:>10} "
              f"{r['scoring_cpu_ms']:>12} {r['cpu_ratio']:>6} {r['buffer_mb']:>10} {r['logits_all_buffer_mb']:>14}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
