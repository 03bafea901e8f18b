"""Routing-decision latency on this CPU, per router and encoder (a benchmark script, not a test).

    python -m benchmarks.perf.bench_routing [--pool small-17] [--n 200] [--batch 256] [--threads 1]
                                       [--encoder static-minilm-256 ...] [--router correct ...]
                                       [--compare-minilm] [--json FILE]

Fits each router on the shipped MMLU-Pro replay data (train side of the default
split), then routes held-out questions and prints (the static encoder's chunk cache warmed on the
training questions before each measurement, as a gateway's is after some traffic; ``--cold``: empty):
- embed p50/p99: one request's embedding (the real encoder, no cache hit);
- route p50/p99: the pure ``route()`` step alone (embedding given);
- single p50/p99: both together, as the gateway does per request;
- batch q/s: questions per second over all held-out questions, each batch embedded at once and routed at once
  (the median of three passes)
  (``router.base.route_many``: the neighbour routers find a whole batch's neighbours in one product).
``--compare-minilm`` adds MiniLM's embedding alone (one question, and batches) beside them, for
comparison: routers fitted on MiniLM need the training questions embedded by it first (minutes).
Targets (routing issue): default encoder single p50 <= 1 ms, p99 <= 3 ms, route < 0.5 ms for every
router, batch >= 2,000 q/s.  ``--json`` writes per router and encoder single_p50_ms, single_p99_ms,
route_p50_ms and batch_qps.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchmarks.replay import REPLAY_ROUTERS
from router.base import RouteRequest, route_many
from router.encoder import cached_encode, default_cache_dir, get_encoder
from router.evaluation import replay_experts
from router.knn import limit_blas_threads
from router.replay_data import DEFAULTS, hash_split, load_models, load_replay


BATCH_PASSES = 3


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = np.array(samples_s) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def bench_router(name, router, encoder, texts, metadata, candidates, k, batch, batch_set=None,
                 reset=lambda: None) -> dict:
    """``reset()`` runs before the single requests and before the batches: each starts from the
    same encoder state (the static encoder's chunk cache), never from the other's."""
    embed_t, route_t, single_t = [], [], []
    reset()
    for text, meta in zip(texts, metadata):
        t0 = time.perf_counter()
        emb = encoder.encode([text])[0]
        t1 = time.perf_counter()
        router.route(RouteRequest(text, emb, meta), candidates, k)
        t2 = time.perf_counter()
        embed_t.append(t1 - t0)
        route_t.append(t2 - t1)
        single_t.append(t2 - t0)
    batch_texts, batch_meta = batch_set or (texts, metadata)
    rates = []
    for _ in range(BATCH_PASSES):                     # the median pass: one noisy second moves it less
        reset()
        rates.append(batch_rate(encoder, batch_texts, batch_meta, batch, router, candidates, k))
    return {"router": name, "encoder": encoder.name, "k": k, "embed": percentiles(embed_t),
            "route": percentiles(route_t), "single": percentiles(single_t),
            "batch_qps": float(np.median(rates))}


def encoder_reset(encoder, warm_texts):
    """Empty the encoder's cache (where it has one), then encode ``warm_texts``: the state of a
    gateway that has served those questions, here the training side, never the timed ones."""
    def reset():
        if hasattr(encoder, "clear_cache"):
            encoder.clear_cache()
            if warm_texts:
                encoder.encode(list(warm_texts))
    return reset


def batch_rate(encoder, texts, metadata, batch, router=None, candidates=(), k=1) -> float:
    """Questions per second, embedding ``batch`` at once (and routing each when a router is given)."""
    done, t0 = 0, time.perf_counter()
    for start in range(0, len(texts), batch):
        chunk = texts[start:start + batch]
        embs = encoder.encode(chunk)
        if router is not None:
            route_many(router, [RouteRequest(text, emb, meta) for text, emb, meta in zip(chunk, embs, metadata[start:])],
                       candidates, k)
        done += len(chunk)
    return done / (time.perf_counter() - t0)


def encoder_only(encoder, texts, batch) -> dict:
    times = []
    for text in texts:
        t0 = time.perf_counter()
        encoder.encode([text])
        times.append(time.perf_counter() - t0)
    return {"router": "(embedding only)", "encoder": encoder.name, "embed": percentiles(times),
            "batch_qps": batch_rate(encoder, texts[: max(batch, 64)], [], batch)}


def row(r: dict) -> str:
    route = f"{r['route'][0]:>9.3f}/{r['route'][1]:<8.3f}" if "route" in r else f"{'-':>18}"
    single = f"{r['single'][0]:>10.2f}/{r['single'][1]:<8.2f}" if "single" in r else f"{'-':>19}"
    return (f"{r['router']:<17}{r['encoder']:<19}{r['embed'][0]:>9.2f}/{r['embed'][1]:<8.2f}{route}{single}"
            f"{r['batch_qps']:>11.1f}")


def to_json(rows: list[dict]) -> list[dict]:
    return [{"router": r["router"], "encoder": r["encoder"], "embed_p50_ms": round(r["embed"][0], 4),
             "embed_p99_ms": round(r["embed"][1], 4),
             **({"single_p50_ms": round(r["single"][0], 4), "single_p99_ms": round(r["single"][1], 4),
                 "route_p50_ms": round(r["route"][0], 4), "route_p99_ms": round(r["route"][1], 4)}
                if "route" in r else {}),
             "batch_qps": round(r["batch_qps"], 1)} for r in rows]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", default="small-17")
    ap.add_argument("--n", type=int, default=200, help="single requests timed per router")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--encoder", action="append", help="default: static-minilm-256 (repeatable)")
    ap.add_argument("--router", action="append", choices=list(REPLAY_ROUTERS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads for MiniLM (default 1)")
    ap.add_argument("--compare-minilm", action="store_true", help="add MiniLM's embedding-only figures")
    ap.add_argument("--cold", action="store_true",
                    help="time with the static encoder's chunk cache empty (the first requests after a start); "
                         "default: warmed on the training questions, as after some traffic")
    ap.add_argument("--json", dest="json_out", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")     # one thread, as the issue measures
    limit_blas_threads(1, user_api=None)                          # BLAS and OpenMP (scikit-learn's fits)

    data = load_replay(DEFAULTS["questions"], DEFAULTS["predictions"], load_models(), args.pool)
    mask = hash_split(data.question_ids)
    train, test = data.subset(~mask), data.subset(mask)
    texts = list(test.texts[: args.n])
    metadata = [test.metadata(i) for i in range(len(texts))]
    candidates = replay_experts(test.experts, test.active_params)
    print(f"{len(texts)} single requests per router, then all {len(test)} held-out questions in batches of "
          f"{args.batch}, k={args.k}; static encoder's chunk cache "
          + ("empty (--cold)" if args.cold else f"warmed on the {len(train)} training questions"))
    print(f"{'router':<17}{'encoder':<19}{'embed p50/p99 ms':>18}{'route p50/p99 ms':>18}"
          f"{'single p50/p99 ms':>19}{'batch q/s':>11}")
    rows = []
    for enc_name in args.encoder or ["static-minilm-256"]:
        encoder = get_encoder(enc_name, threads=args.threads)
        emb = cached_encode(encoder, train.texts, default_cache_dir())
        encoder.encode(["warm up"])
        for name in args.router or list(REPLAY_ROUTERS):
            router = REPLAY_ROUTERS[name](train.outcomes(emb), encoder)
            reset = encoder_reset(encoder, () if args.cold else train.texts)
            rows.append(bench_router(name, router, encoder, texts, metadata, candidates, args.k, args.batch,
                                     (list(test.texts), [test.metadata(i) for i in range(len(test))]), reset))
            print(row(rows[-1]), flush=True)
    if args.compare_minilm:
        encoder = get_encoder("all-minilm-l6-v2", threads=args.threads)
        encoder.encode(["warm up"])
        rows.append(encoder_only(encoder, texts[: min(len(texts), 50)], 64))
        print(row(rows[-1]))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"n": len(texts), "batch": args.batch, "k": args.k, "cold": args.cold,
                       "rows": to_json(rows)}, f, indent=1)
        print(f"figures written to {args.json_out}")


if __name__ == "__main__":
    main()
