"""The load benchmark's report: the table ``python -m benchmarks.perf.bench_load`` prints from its figures."""

from __future__ import annotations

CONCURRENCY = (1, 8, 64)     # the closed-loop concurrencies (bench_load imports them from here)


def table(out: dict) -> str:
    closed, lines = out["closed"], []
    lines.append(f"load benchmark ({out['mode']}): upstream fixed latency {out['upstream_latency_ms']:g} ms; "
                 f"load average {out['load_average_start']} at start, {out['load_average_end']} at end; "
                 + ("upstream + load generator on core 0, gateway on core 1" if out["pinned"] else "NOT pinned"))
    head = "".join(f"{'c=' + str(c) + ' p50/p99':>20}" for c in CONCURRENCY)
    lines.append(f"{'added latency ms':<22}{head}{'c=64 req/s':>12}{'sustained':>11}{'gw CPU ms/req':>15}")
    sustained = out.get("sustained", {})
    for name, by_c in closed.items():
        cells = ""
        for c in CONCURRENCY:
            r, d = by_c[c], closed["direct"][c]
            if name == "direct":
                cells += f"{'(' + format(r['p50_ms'], '.2f') + ' / ' + format(r['p99_ms'], '.2f') + ')':>20}"
            else:
                cells += f"{format(r['p50_ms'] - d['p50_ms'], '.2f') + ' / ' + format(r['p99_ms'] - d['p99_ms'], '.2f'):>20}"
            if r["errors"]:
                cells += f" [{r['errors']} err]"
        s = sustained.get(name)
        sus = "" if s is None else f"{s['sustained_rate']:g}" + ("+" if s["capped"] else "")
        cpu = next((p["gateway_cpu_ms_per_req"] for p in out["phases"]
                    if p["system"] == name and p["phase"] == "closed c=64"), None)
        lines.append(f"{name:<22}{cells}{by_c[64]['rate']:>12.0f}{sus:>11}"
                     f"{'' if not cpu else format(cpu, '.2f'):>15}")
    lines.append("(direct row: the upstream's own latency, ms; sustained: highest Poisson rate with no errors and "
                 f"p99 added < {out['p99_rule_ms']:g} ms; '+': it never failed before the ladder's top or the "
                 "load generator's own limit)")
    for routed, router in (("conclave-routed", "tags"), ("conclave-routed-correct", "correct")):
        if routed in closed:
            cost = [closed[routed][c]["p50_ms"] - closed["conclave"][c]["p50_ms"] for c in CONCURRENCY]
            share = closed[routed][64]["rate"] / max(closed["conclave"][64]["rate"], 1e-9)
            lines.append(f"routing cost ({router} router, routed minus direct-expert p50): "
                         + ", ".join(f"c={c} {v:.2f} ms" for c, v in zip(CONCURRENCY, cost))
                         + f"; routed / direct-expert req/s at c=64: {share:.2f}")
    if ratio := _ratio(sustained):
        lines.append(f"sustained rate, conclave / litellm-proxy: {ratio:.1f}x")
    lines += _sdk_lines(out.get("sdk"))
    lines += _cpu_lines(out["phases"])
    if soak := out.get("soak"):
        lines.append(f"soak: {soak['seconds']:.0f} s at {soak['rate']:g} req/s (70% of sustained), "
                     f"{soak['requests']} requests, {soak['errors']} errors {soak.get('error_kinds') or ''}; "
                     f"gateway RSS start {soak['rss_start_mb']} MB, "
                     f"end {soak['rss_end_mb']} MB, max {soak['rss_max_mb']} MB, slope {soak['slope_mb_per_min']} MB/min "
                     f"-> {'flat' if soak['flat'] else 'GROWING'}; worst 10-s window p99 {soak['p99_ms_worst_window']} ms")
    return "\n".join(lines)


def _ratio(sustained: dict) -> float | None:
    c, l = sustained.get("conclave"), sustained.get("litellm-proxy")
    if not c or not l or not l["sustained_rate"]:
        return None
    return c["sustained_rate"] / l["sustained_rate"]


def _sdk_lines(sdk: dict | None) -> list[str]:
    if not sdk:
        return []
    if "error" in sdk:
        return [f"client-library probe failed: {sdk['error'][-300:]}"]
    lines = ["client library per call (c=1, in-process on core 1): p50 ms over bare aiohttp / CPU ms per call"]
    for kind in ("whole", "stream"):
        floor = sdk[f"aiohttp-bare-{kind}"]
        cells = [f"bare {floor['p50_ms']:.2f} ms, {floor['cpu_ms_per_call']:.2f} cpu"]
        for name in ("lean-client", "litellm-sdk"):
            r = sdk.get(f"{name}-{kind}")
            if r:
                cells.append(f"{name} +{r['p50_ms'] - floor['p50_ms']:.2f} ms, {r['cpu_ms_per_call']:.2f} cpu")
        lines.append(f"  {kind:<7}" + "; ".join(cells))
    return lines


def _cpu_lines(phases: list[dict]) -> list[str]:
    lines = ["CPU seconds per phase (upstream / load generator / gateway), core 0 and gateway-core busy:"]
    for p in phases:
        if p["phase"] == "closed c=64" or p.get("core0_saturated"):
            c = p["cpu_s"]
            lines.append(f"  {p['system']:<16}{p['phase']:<15}{c['upstream']:>7.2f} /{c['loadgen']:>6.2f} /"
                         f"{c['gateway']:>6.2f} s   core0 {p['core0_busy']:.0%}{' SATURATED' if p['core0_saturated'] else ''}"
                         f"  gateway {p['gateway_core_busy']:.0%}")
    return lines
