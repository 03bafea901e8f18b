"""GPU check: the costs behind the vLLM worker's tiers, measured with PyTorch only.

    python benchmarks/gpu_check.py                      # 1, 4 and 16 GB; under 4 minutes on one GPU
    python benchmarks/gpu_check.py --sizes 0.05,0.1     # tiny sizes (a CPU-only machine, a test)
    python benchmarks/gpu_check.py --json out.json      # every figure as JSON too ("-": stdout)

Sizes run smallest first; a size's disk rows are skipped (and say so) when the slowest read rate so
far says writing and reading it twice would end past ``--budget-s`` (200 s), so a slow disk cannot
push the run past 4 minutes.

One file, the standard library and torch only (no Conclave import, no weights, nothing to
download), so it runs on a bare GPU machine.  For each size it makes a synthetic weight tensor and
measures:

    h2d_pinned_s     host-to-device copy from pinned memory      (vLLM sleep level 1 -> wake)
    h2d_pageable_s   host-to-device copy from pageable memory    (weights read into ordinary memory)
    read_cold_s      read of the weight file with the page cache dropped (posix_fadvise DONTNEED)
    read_warm_s      the same read again, from the page cache
    gpu_free_s       freeing the tensor on the GPU (del + synchronize + empty_cache)

and prints the tier costs the scheduler's cost model would use (service/workers/tiers.py):
sleep1 = h2d_pinned; page_cache = read_warm + h2d_pageable; disk = read_cold + h2d_pageable.
These are the floors a model's weights set; a vLLM wake or engine start adds its own work
(KV cache, CUDA graphs): the worker measures those itself.  Without CUDA the H2D and free rows say
that no GPU is present and only the disk rows are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

GB = 1024 ** 3
CHUNK = 64 * 1024 * 1024


def timed(fn, sync: bool = False) -> float:
    if sync:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def synthetic(nbytes: int, pin: bool) -> torch.Tensor:
    """A host tensor of ``nbytes`` with every page written (so its memory is really there)."""
    t = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)
    t.fill_(7)
    return t


def h2d(nbytes: int) -> dict:
    """Host-to-device from pinned and pageable memory, and the GPU-side free."""
    if not torch.cuda.is_available():
        return {"h2d_pinned_s": None, "h2d_pageable_s": None, "gpu_free_s": None}
    out = {}
    for key, pin in (("h2d_pinned_s", True), ("h2d_pageable_s", False)):
        host = synthetic(nbytes, pin)
        holder = {}
        out[key] = timed(lambda h=host: holder.__setitem__("d", h.to("cuda", non_blocking=pin)), sync=True)
        del host
        if pin:
            out["gpu_free_s"] = timed(lambda: (holder.clear(), torch.cuda.empty_cache()), sync=True)
        holder.clear()
        torch.cuda.empty_cache()
    return out


def write_file(path: str, nbytes: int) -> None:
    block = b"\x07" * CHUNK
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            left -= f.write(block[:min(CHUNK, left)])
        f.flush()
        os.fsync(f.fileno())


def drop_cache(path: str) -> bool:
    """Drop ``path`` from the page cache (clean pages only: the file was fsynced)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def read_file(path: str, buf: bytearray) -> int:
    view, n = memoryview(buf), 0
    with open(path, "rb", buffering=0) as f:
        while n < len(buf):
            got = f.readinto(view[n:n + CHUNK])
            if not got:
                break
            n += got
    return n


def disk(nbytes: int, folder: str) -> dict:
    fd, path = tempfile.mkstemp(prefix="gpu-check-", suffix=".bin", dir=folder)
    os.close(fd)
    try:
        write_file(path, nbytes)
        buf = bytearray(nbytes)
        dropped = drop_cache(path)
        cold = timed(lambda: read_file(path, buf))
        warm = timed(lambda: read_file(path, buf))
        return {"read_cold_s": cold, "read_warm_s": warm, "cache_dropped": dropped}
    finally:
        os.unlink(path)


def tiers(row: dict) -> dict:
    """The worker's tier costs from one row (None where a part was not measured)."""
    pin, page, warm, cold = row["h2d_pinned_s"], row["h2d_pageable_s"], row["read_warm_s"], row["read_cold_s"]
    return {"sleep1": pin,
            "page_cache": None if page is None or warm is None else warm + page,
            "disk": None if page is None or cold is None else cold + page}


def measure(size_gb: float, folder: str, disk_ok: bool = True) -> dict:
    nbytes = int(size_gb * GB)
    skipped = {"read_cold_s": None, "read_warm_s": None, "cache_dropped": None, "disk_skipped": True}
    row = {"size_gb": size_gb, **h2d(nbytes), **(disk(nbytes, folder) if disk_ok else skipped)}
    row["gbps_pinned"] = _rate(nbytes, row["h2d_pinned_s"])
    row["gbps_pageable"] = _rate(nbytes, row["h2d_pageable_s"])
    row["gbps_cold"], row["gbps_warm"] = _rate(nbytes, row["read_cold_s"]), _rate(nbytes, row["read_warm_s"])
    row["tiers_s"] = tiers(row)
    return row


def _disk_rate(rows: list[dict]) -> float | None:
    """GB/s of the slowest disk read so far (None before the first)."""
    rates = [r["gbps_cold"] for r in rows if r.get("gbps_cold")]
    return min(rates) if rates else None


def _rate(nbytes: int, seconds: float | None) -> float | None:
    return None if not seconds else nbytes / GB / seconds


def device() -> str:
    if not torch.cuda.is_available():
        return "no GPU present (torch.cuda.is_available() is False)"
    p = torch.cuda.get_device_properties(0)
    return f"{p.name}, {p.total_memory / GB:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}"


def _f(x, fmt: str = "{:8.3f}") -> str:
    return fmt.format(x) if x is not None else f"{'-':>{len(fmt.format(0.0))}}"


def render(rows: list[dict], dev: str) -> str:
    lines = [f"device: {dev}"]
    if not torch.cuda.is_available():
        lines.append("no GPU is present: the H2D, free and GPU tier rows are not measured (-)")
    lines.append(f"{'size GB':>8} {'pinned s':>8} {'GB/s':>6} {'pageable s':>10} {'GB/s':>6} {'cold s':>8} "
                 f"{'GB/s':>6} {'warm s':>8} {'GB/s':>6} {'free s':>8}")
    for r in rows:
        lines.append(f"{r['size_gb']:>8g} {_f(r['h2d_pinned_s'])} {_f(r['gbps_pinned'], '{:6.1f}')} "
                     f"{_f(r['h2d_pageable_s'], '{:10.3f}')} {_f(r['gbps_pageable'], '{:6.1f}')} "
                     f"{_f(r['read_cold_s'])} {_f(r['gbps_cold'], '{:6.1f}')} {_f(r['read_warm_s'])} "
                     f"{_f(r['gbps_warm'], '{:6.1f}')} {_f(r['gpu_free_s'])}")
    lines.append("tier costs for the scheduler's cost model (weights only; a vLLM wake or start adds its own):")
    lines.append(f"{'size GB':>8} {'sleep1 s':>9} {'page_cache s':>13} {'disk s':>8}")
    for r in rows:
        t = r["tiers_s"]
        lines.append(f"{r['size_gb']:>8g} {_f(t['sleep1'], '{:9.3f}')} {_f(t['page_cache'], '{:13.3f}')} "
                     f"{_f(t['disk'])}")
    if any(r.get("disk_skipped") for r in rows):
        lines.append("disk rows of the larger sizes skipped: at the measured read rate they would pass --budget-s")
    if rows and rows[0]["cache_dropped"] is False:
        lines.append("note: posix_fadvise is missing here: the cold read may have come from the page cache")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,4,16", help="weight sizes in GB, comma-separated (default 1,4,16)")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the temporary weight files go")
    ap.add_argument("--budget-s", type=float, default=200.0,
                    help="skip a size's disk rows when the measured disk rate says they would end past this")
    ap.add_argument("--json", dest="json_out", help="also write every figure as JSON to this file ('-': stdout)")
    a = ap.parse_args(argv)
    sizes = [float(s) for s in a.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) <= 0:
        ap.error("--sizes needs positive numbers, e.g. --sizes 1,4,16")
    t0, dev = time.perf_counter(), device()
    rows = []
    for size in sorted(sizes):   # a slow disk must not push the run past --budget-s: skip reads that would
        took = time.perf_counter() - t0
        rate = _disk_rate(rows)
        rows.append(measure(size, a.dir, rate is None or took + 3 * size / rate < a.budget_s))
    print(render(rows, dev))
    print(f"took {time.perf_counter() - t0:.1f} s")
    doc = {"device": dev, "gpu": torch.cuda.is_available(), "rows": rows}
    if a.json_out == "-":
        print(json.dumps(doc, indent=2))
    elif a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
