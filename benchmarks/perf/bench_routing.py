"""Routing-decision latency on this CPU, per router (a benchmark script, not a test).

    python -m benchmarks.perf.bench_routing [--pool small-17] [--n 200] [--batch 64] [--threads 1]
                                       [--encoder all-minilm-l6-v2] [--router knn ...]

Fits each router on the shipped MMLU-Pro replay data (train side of the default
split), then routes held-out questions and prints:
- embed p50/p99: one request's embedding (the real encoder, no cache hit);
- route p50/p99: the pure ``route()`` step alone (embedding given);
- single p50/p99: both together, as the gateway does per request;
- batch q/s: questions per second when a batch is embedded at once and routed.
Target (issue 3): single p50 <= 20 ms with the embedding, route < 1 ms.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.replay import REPLAY_ROUTERS
from router.base import RouteRequest
from router.encoder import cached_encode, default_cache_dir, get_encoder
from router.evaluation import replay_experts
from router.replay_data import DEFAULTS, hash_split, load_models, load_replay


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = np.array(samples_s) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def bench_router(name, router, encoder, texts, metadata, candidates, k, batch) -> dict:
    embed_t, route_t, single_t = [], [], []
    for text, meta in zip(texts, metadata):
        t0 = time.perf_counter()
        emb = encoder.encode([text])[0]
        t1 = time.perf_counter()
        router.route(RouteRequest(text, emb, meta), candidates, k)
        t2 = time.perf_counter()
        embed_t.append(t1 - t0)
        route_t.append(t2 - t1)
        single_t.append(t2 - t0)
    chunk = texts[:batch]
    t0 = time.perf_counter()
    embs = encoder.encode(chunk)
    for text, emb, meta in zip(chunk, embs, metadata):
        router.route(RouteRequest(text, emb, meta), candidates, k)
    batch_qps = len(chunk) / (time.perf_counter() - t0)
    return {"router": name, "k": k, "embed": percentiles(embed_t), "route": percentiles(route_t),
            "single": percentiles(single_t), "batch_qps": batch_qps}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", default="small-17")
    ap.add_argument("--n", type=int, default=200, help="single requests timed per router")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--encoder", default="all-minilm-l6-v2")
    ap.add_argument("--router", action="append", choices=list(REPLAY_ROUTERS))
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the encoder")
    args = ap.parse_args(argv)

    data = load_replay(DEFAULTS["questions"], DEFAULTS["predictions"], load_models(), args.pool)
    mask = hash_split(data.question_ids)
    train, test = data.subset(~mask), data.subset(mask)
    encoder = get_encoder(args.encoder, **({"threads": args.threads} if args.threads else {}))
    emb = cached_encode(encoder, train.texts, default_cache_dir())
    encoder.encode(["warm up"])
    texts = list(test.texts[: args.n])
    metadata = [test.metadata(i) for i in range(len(texts))]
    candidates = replay_experts(test.experts, test.active_params)
    print(f"{len(texts)} single requests per router, batch of {args.batch}, k={args.k}, encoder {encoder.name}")
    print(f"{'router':<15}{'embed p50/p99 ms':>18}{'route p50/p99 ms':>18}{'single p50/p99 ms':>19}{'batch q/s':>11}")
    for name in args.router or list(REPLAY_ROUTERS):
        router = REPLAY_ROUTERS[name](train.outcomes(emb), encoder)
        r = bench_router(name, router, encoder, texts, metadata, candidates, args.k, args.batch)
        print(f"{name:<15}{r['embed'][0]:>9.2f}/{r['embed'][1]:<8.2f}{r['route'][0]:>9.3f}/{r['route'][1]:<8.3f}"
              f"{r['single'][0]:>10.2f}/{r['single'][1]:<8.2f}{r['batch_qps']:>11.1f}")


if __name__ == "__main__":
    main()
