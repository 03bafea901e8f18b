"""Load benchmark: what Conclave adds over calling an OpenAI-compatible upstream directly, beside
LiteLLM's proxy, measured side by side in one run on this machine.

    .venv/bin/python -m benchmarks.perf.bench_load [--quick] [--no-litellm] [--no-trained-router]
                                                   [--soak-seconds 600] [--json out.json]

Starts a fixed-latency fake upstream (``benchmarks.perf.load_upstream``, its own process), Conclave's
gateway (``conclave serve``: temp CONCLAVE_HOME, API key auth on, embedded store, experts pointing at
that upstream), LiteLLM's proxy 1.106.2 (one worker, its own venv ``.venv-litellm-proxy``, made by
``scripts/install-litellm-proxy.sh`` when missing) and, as the floor any Python proxy pays on this
machine, a bare aiohttp reverse proxy. The upstream and this process (the load generator) are
pinned to core 0, the gateway under test to core 1. Then:

- closed loop at concurrency 1, 8 and 64: latency p50/p99 through each system; added latency is
  that minus the direct call's, measured in the same run;
- open loop (Poisson) on a ladder of rates (x2, then bisection): the highest rate with no errors and
  p99 added latency (p99 through the gateway minus p99 direct at the same rate) under 50 ms;
- the client-library cost per call (``benchmarks.perf.load_sdk``): bare aiohttp, the lean client, litellm;
- the routed path (``conclave-auto``), with the tags router and with the trained correctness router
  (``conclave-routed-correct``: the replay pool's 17 experts registered as remote experts on the fake
  upstream, the router trained on the shipped replay data, an MMLU-Pro question per request);
  routing cost = routed minus direct-expert latency, and routed / direct throughput at c=64;
- CPU seconds of the upstream, the load generator and each gateway per phase (core 0 marked
  SATURATED when the generator and upstream used >= 90% of it: then the figures are the generator's);
- ``--soak-seconds N``: open loop at 70% of Conclave's sustained rate, gateway RSS every 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from .load_gen import (Result, Target, closed_loop, load_average, open_loop, rss_mb, self_cpu, session,
                       slope_per_minute, tree_cpu)
from .load_report import CONCURRENCY, table

ROOT = Path(__file__).resolve().parents[2]
PROXY_VENV = ROOT / ".venv-litellm-proxy"
P99_RULE_MS = 50.0
API_KEY = "sk-bench-load"
ASK = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
ROUTED_ASK = {"messages": [{"role": "user", "content": "A math question: what is 2 + 2?"}], "max_tokens": 16}


@dataclass
class Mode:
    closed_seconds: float
    step_seconds: float
    refine: int
    max_rate: float
    sdk_calls: int
    pause: float       # seconds between ladder steps (a failed step waits 4x: its backlog drains)


MODES = {"full": Mode(6.0, 8.0, 3, 6000, 300, 0.5), "quick": Mode(0.6, 0.8, 0, 1000, 40, 0.2)}


@dataclass
class System:
    name: str
    target: Target
    pid: int | None      # the gateway process (None: the upstream itself)


# --- processes ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(core: int) -> list[str]:
    """``taskset -c CORE`` when this machine has the cores for it (else unpinned, said in the table)."""
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else []


def start(stack: ExitStack, cmd: list[str], log: Path, ready_url: str, env: dict | None = None,
          timeout: float = 120.0) -> subprocess.Popen:
    out = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    stack.callback(_stop, proc, out)
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{' '.join(cmd)} not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen, out) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out.close()


def start_upstream(stack: ExitStack, tmp: Path, latency_ms: float) -> tuple[str, int]:
    port = free_port()
    proc = start(stack, pinned(0) + [sys.executable, "-m", "benchmarks.perf.load_upstream", "--port", str(port),
                                     "--latency-ms", str(latency_ms)], tmp / "upstream.log",
                 f"http://127.0.0.1:{port}/health", {**os.environ, "PYTHONPATH": str(ROOT)})
    return f"http://127.0.0.1:{port}/v1", proc.pid


def start_bare_proxy(stack: ExitStack, tmp: Path, upstream: str) -> tuple[str, int]:
    """The floor: a bare aiohttp reverse proxy on the gateway's core (what any Python proxy costs here)."""
    port = free_port()
    proc = start(stack, pinned(1) + [sys.executable, "-m", "benchmarks.perf.load_upstream", "--port", str(port),
                                     "--proxy-to", upstream], tmp / "bare-proxy.log",
                 f"http://127.0.0.1:{port}/health", {**os.environ, "PYTHONPATH": str(ROOT)})
    return f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid


def train_pool_router(store, home: Path, upstream: str) -> str:
    """Register the replay pool's experts on the fake upstream and train the correctness router on the
    shipped replay data (static encoder); returns an MMLU-Pro question to route."""
    from experts_registry.model import Expert
    from router.encoder import get_encoder
    from router.replay_data import DEFAULTS
    from router.training import replay_outcomes, train_router

    enc = get_encoder("static-minilm-256")
    outcomes = replay_outcomes(DEFAULTS["questions"], DEFAULTS["predictions"], DEFAULTS["models"], "small-17", enc)
    for name in outcomes.experts:
        store.add(Expert(name=name, backend="litellm", model="openai/load", api_base=upstream))
    t0 = time.perf_counter()
    train_router("correct", outcomes, home / "routers" / "correct", encoder=enc, holdout=0.0)
    print(f"trained the correct router for the routed row in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return outcomes.texts[0]


def start_conclave(stack: ExitStack, tmp: Path, upstream: str, lean: bool,
                   trained: bool = True) -> tuple[str, int, str | None]:
    from experts_registry import open_store
    from experts_registry.model import Expert

    home = tmp / "conclave-home"
    store = open_store(home)
    store.claim("bundled-offered")   # only the benchmark's experts: no local model is ever touched
    store.add(Expert(name="bench", backend="litellm", model="openai/load", api_base=upstream, skills=("general",)))
    store.add(Expert(name="bench-math", backend="litellm", model="openai/load", api_base=upstream,
                     skills=("math",)))
    question = train_pool_router(store, home, upstream) if trained else None
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCLAVE_")}
    env.update(CONCLAVE_HOME=str(home), CONCLAVE_API_KEYS=API_KEY, CONCLAVE_ROUTER="tags",
               CONCLAVE_GENERALIST="bench", CONCLAVE_LEAN_CLIENT="1" if lean else "0",
               LITELLM_LOCAL_MODEL_COST_MAP="True")
    exe = str(Path(sys.executable).with_name("conclave"))
    proc = start(stack, pinned(1) + [exe, "serve", "--port", str(port), "--log-level", "warning"],
                 tmp / "conclave.log", f"http://127.0.0.1:{port}/health", env)
    return f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid, question


def start_litellm_proxy(stack: ExitStack, tmp: Path, upstream: str) -> tuple[str, int]:
    exe = PROXY_VENV / "bin" / "litellm"
    if not exe.exists():
        script = ROOT / "scripts" / "install-litellm-proxy.sh"
        print(f"installing LiteLLM's proxy into {PROXY_VENV} ({script.name}) ...", file=sys.stderr)
        subprocess.run(["bash", str(script)], check=True)
    config = tmp / "litellm.yaml"
    config.write_text(json.dumps({   # JSON is YAML
        "model_list": [{"model_name": "bench", "litellm_params": {"model": "openai/load", "api_base": upstream,
                                                                  "api_key": "none"}}],
        "general_settings": {"master_key": API_KEY}}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VIRTUAL_ENV")}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    proc = start(stack, pinned(1) + [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                                     "--num_workers", "1"], tmp / "litellm.log",
                 f"http://127.0.0.1:{port}/health/liveliness", env, timeout=300)
    return f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid


def sdk_probe(upstream: str, calls: int, with_litellm: bool) -> dict:
    """The client-library cost per call, in its own process on core 1 (no gateway running then)."""
    cmd = pinned(1) + [sys.executable, "-m", "benchmarks.perf.load_sdk", "--api-base", upstream, "--n", str(calls)]
    out = subprocess.run(cmd + ([] if with_litellm else ["--no-litellm"]), capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
                         timeout=600)
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- measuring ------------------------------------------------------------------------------------

class Bench:
    def __init__(self, mode: Mode, upstream_pid: int, direct: System, latency_ms: float):
        self.mode = mode
        self.latency_ms = latency_ms
        self.upstream_pid = upstream_pid
        self.direct = direct
        self.direct_at: dict[float, Result] = {}
        self.phases: list[dict] = []

    async def phase(self, http, system: System, what: str, run) -> Result:
        """Run one measurement and record everybody's CPU seconds over it."""
        u0, g0, s0 = tree_cpu(self.upstream_pid), tree_cpu(system.pid) if system.pid else 0.0, self_cpu()
        t0 = time.perf_counter()
        result = await run(http)
        elapsed = time.perf_counter() - t0   # an open-loop step lasts longer than offered when backlogged
        u, s = tree_cpu(self.upstream_pid) - u0, self_cpu() - s0
        g = tree_cpu(system.pid) - g0 if system.pid else 0.0
        core0 = (u + s) / elapsed
        self.phases.append({"system": system.name, "phase": what, **result.summary(),
                            "cpu_s": {"upstream": round(u, 3), "loadgen": round(s, 3), "gateway": round(g, 3)},
                            "core0_busy": round(core0, 3), "core0_saturated": core0 >= 0.9,
                            "gateway_core_busy": round(g / elapsed, 3),
                            "gateway_cpu_ms_per_req": round(1000 * g / max(1, result.count), 3)})
        print(f"  {system.name:<16}{what:<16}{result.count:>7} req  p50 {result.pct(50):8.2f} ms  "
              f"p99 {result.pct(99):8.2f} ms  errors {result.errors}", file=sys.stderr, flush=True)
        return result

    async def closed(self, http, systems: list[System], rounds: int = 6) -> dict[str, dict[int, Result]]:
        """c=1 first, in interleaved rounds (every system in turn, ``rounds`` times, 2x the usual time
        in all), so slow drift in this shared machine's speed hits every system alike and the added
        latency at c=1 compares like with like; then c=8 and c=64, one system after the other."""
        for system in systems:
            await closed_loop(http, system.target, 8, self.mode.closed_seconds / 2)   # warm-up
        parts: dict[str, list[Result]] = {s.name: [] for s in systems}
        for i in range(rounds):
            for system in systems:
                parts[system.name].append(await self.phase(
                    http, system, f"closed c=1 #{i + 1}",
                    lambda h, t=system.target: closed_loop(h, t, 1, 2 * self.mode.closed_seconds / rounds)))
        out = {name: {1: Result.merged(rs)} for name, rs in parts.items()}
        for system in systems:
            for c in CONCURRENCY[1:]:
                out[system.name][c] = await self.phase(
                    http, system, f"closed c={c}",
                    lambda h, c=c, t=system.target: closed_loop(h, t, c, self.mode.closed_seconds))
        return out

    async def at_rate(self, http, system: System, rate: float) -> tuple[bool, dict]:
        if rate not in self.direct_at:
            self.direct_at[rate] = await self.phase(http, self.direct, f"open {rate:g}/s",
                                                    lambda h: open_loop(h, self.direct.target, rate,
                                                                        self.mode.step_seconds, seed=int(rate)))
        r = await self.phase(http, system, f"open {rate:g}/s",
                             lambda h: open_loop(h, system.target, rate, self.mode.step_seconds, seed=int(rate)))
        direct = self.direct_at[rate]
        added = r.pct(99) - direct.pct(99)
        ok = r.errors == 0 and r.latencies and added < P99_RULE_MS
        # the generator and upstream themselves fell behind: this rate says nothing about the gateway
        limited = direct.errors > 0 or not direct.pct(99) < self.latency_ms + P99_RULE_MS
        await asyncio.sleep(self.mode.pause * (1 if ok else 4))
        return bool(ok and not limited), {"rate": rate, "ok": bool(ok), "added_p99_ms": round(added, 3),
                                          "errors": r.errors, "generator_limited": limited}

    async def sustained(self, http, system: System, start_rate: float = 10.0) -> dict:
        """Ladder x2 from ``start_rate`` until a step fails, then bisect ``refine`` times."""
        passed, failed, steps, rate = 0.0, None, [], start_rate
        while rate <= self.mode.max_rate:
            ok, step = await self.at_rate(http, system, rate)
            steps.append(step)
            if not ok:
                failed = None if step["generator_limited"] else rate
                break
            passed, rate = rate, rate * 2
        for _ in range(self.mode.refine):
            if failed is None or failed - passed < 2:
                break
            mid = float(round((passed + failed) / 2))
            ok, step = await self.at_rate(http, system, mid)
            steps.append(step)
            if step["generator_limited"]:
                break
            passed, failed = (mid, failed) if ok else (passed, mid)
        return {"sustained_rate": passed, "capped": failed is None, "steps": steps}

    async def soak(self, http, system: System, rate: float, seconds: float, window: float = 10.0) -> dict:
        settled = await settle(system.pid)   # the ladder's last (failed) step may have left a backlog
        t0, samples, windows = time.monotonic(), [(0.0, rss_mb(system.pid))], []
        while time.monotonic() - t0 < seconds:
            r = await open_loop(http, system.target, rate, min(window, seconds - (time.monotonic() - t0)),
                                seed=len(windows))
            samples.append((time.monotonic() - t0, rss_mb(system.pid)))
            windows.append({"p99_ms": round(r.pct(99), 2), "errors": r.errors, "requests": r.count,
                            "error_kinds": r.error_kinds})
            print(f"  soak {samples[-1][0]:6.0f} s  RSS {samples[-1][1]:7.1f} MB  p99 {r.pct(99):7.2f} ms  "
                  f"errors {r.errors} {r.error_kinds or ''}", file=sys.stderr, flush=True)
        rss = [v for _, v in samples]
        later = [s for s in samples if s[0] >= seconds / 3] or samples
        slope = slope_per_minute(later)
        kinds: dict[str, int] = {}
        for w in windows:
            for kind, n in w["error_kinds"].items():
                kinds[kind] = kinds.get(kind, 0) + n
        return {"rate": rate, "seconds": round(samples[-1][0], 1), "settled_s": settled,
                "rss_start_mb": round(rss[0], 1),
                "rss_end_mb": round(rss[-1], 1), "rss_max_mb": round(max(rss), 1),
                "slope_mb_per_min": round(slope, 3), "flat": abs(slope) < 0.5,
                "requests": sum(w["requests"] for w in windows), "errors": sum(w["errors"] for w in windows),
                "error_kinds": kinds, "windows": windows,
                "p99_ms_worst_window": max((w["p99_ms"] for w in windows), default=float("nan")),
                "rss_samples": [(round(t, 1), round(v, 1)) for t, v in samples]}


async def settle(pid: int, idle_share: float = 0.05, most: float = 60.0) -> float:
    """Wait until the gateway's CPU over one second is under ``idle_share`` of a core (at most
    ``most`` seconds); the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < most:
        c0 = tree_cpu(pid)
        await asyncio.sleep(1.0)
        if tree_cpu(pid) - c0 < idle_share:
            break
    return round(time.monotonic() - t0, 1)


def body(model: str, ask: dict) -> bytes:
    return json.dumps({"model": model, **ask}).encode()


async def run(args, tmp: Path) -> dict:
    mode = MODES["quick" if args.quick else "full"]
    out = {"mode": "quick" if args.quick else "full", "upstream_latency_ms": args.latency_ms,
           "load_average_start": load_average(), "pinned": bool(pinned(0)), "p99_rule_ms": P99_RULE_MS}
    if pinned(0):
        os.sched_setaffinity(0, {0})   # the load generator shares core 0 with the upstream
    with ExitStack() as stack:
        upstream, upstream_pid = start_upstream(stack, tmp, args.latency_ms)
        if not args.no_sdk:
            out["sdk"] = sdk_probe(upstream, mode.sdk_calls, not args.no_litellm)
        direct = System("direct", Target("direct", upstream + "/chat/completions", body("load", ASK)), None)
        auth = {"authorization": f"Bearer {API_KEY}"}
        url, pid = start_bare_proxy(stack, tmp, upstream)
        bare = System("aiohttp-proxy", Target("aiohttp-proxy", url, body("load", ASK)), pid)
        url, pid, question = start_conclave(stack, tmp, upstream, lean=not args.litellm_client,
                                            trained=not args.no_trained_router)
        systems = [direct, bare, System("conclave", Target("conclave", url, body("bench", ASK), auth), pid),
                   System("conclave-routed", Target("conclave-routed", url, body("conclave-auto", ROUTED_ASK), auth),
                          pid)]
        if question:
            ask = {"messages": [{"role": "user", "content": question}], "max_tokens": 16,
                   "conclave": {"router": "correct"}}
            systems.append(System("conclave-routed-correct",
                                  Target("conclave-routed-correct", url, body("conclave-auto", ask), auth), pid))
        if not args.no_litellm:
            url, pid = start_litellm_proxy(stack, tmp, upstream)
            systems.append(System("litellm-proxy", Target("litellm-proxy", url, body("bench", ASK), auth), pid))
        bench = Bench(mode, upstream_pid, direct, args.latency_ms)
        async with session() as http:
            closed = await bench.closed(http, systems)
            out["closed"] = {name: {c: r.summary() for c, r in by_c.items()} for name, by_c in closed.items()}
            out["sustained"] = {s.name: await bench.sustained(http, s) for s in systems
                                if s.name in ("conclave", "litellm-proxy") or (s is bare and not args.quick)}
            if args.soak_seconds > 0:
                rate = round(0.7 * out["sustained"]["conclave"]["sustained_rate"], 1)
                conclave = next(s for s in systems if s.name == "conclave")
                out["soak"] = await bench.soak(http, conclave, rate, args.soak_seconds)
        out["phases"] = bench.phases
    out["load_average_end"] = load_average()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short steps, no bisection (a smoke run, ~30 s)")
    ap.add_argument("--no-litellm", action="store_true", help="skip LiteLLM's proxy and the litellm SDK probe")
    ap.add_argument("--no-sdk", action="store_true", help="skip the client-library probe")
    ap.add_argument("--litellm-client", action="store_true",
                    help="run Conclave with CONCLAVE_LEAN_CLIENT=0 (its experts through the litellm SDK)")
    ap.add_argument("--latency-ms", type=float, default=10.0, help="the fake upstream's fixed latency")
    ap.add_argument("--no-trained-router", action="store_true",
                    help="skip the conclave-routed-correct row (it trains the correctness router first, ~1 min)")
    ap.add_argument("--soak-seconds", type=float, default=0.0, help="then soak at 70%% of the sustained rate")
    ap.add_argument("--json", dest="json_out", default=None, help="write all figures here")
    args = ap.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="conclave-load-") as tmp:
        out = asyncio.run(run(args, Path(tmp)))
    print(table(out))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
