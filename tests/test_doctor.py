"""`conclave doctor` and the portable llama.cpp build: real probes in child processes, real crashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from experts_registry.bundled import BUNDLED
from service.cli import doctor_checks as doctor
from service.cli import main
from service.core.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
SEGV = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
SIGILL = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
PORTABLE_INFO = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 |"
AVX2_CPU = {"avx", "avx2", "fma", "f16c", "bmi2"}


def llama_probe(info: str) -> doctor.Probe:
    return doctor.Probe(True, {"version": "0.3.36", "system_info": info, "package_dir": "/x"}, "")


@pytest.mark.real
def test_installed_llama_build_has_no_amx_and_is_not_native():
    """The build in this venv, as llama.cpp itself reports it."""
    probe = doctor.run_probe(["llama"])
    assert probe.ok, probe.error
    features = doctor.build_features(probe.result["system_info"])
    assert {"AVX2", "FMA", "F16C"} <= features or not {"avx2"} & doctor.cpu_flags(), features
    assert not [f for f in features if f.startswith("AMX")], f"AMX kernels: {probe.result['system_info']}"
    assert not [f for f in features if f.startswith(doctor.NON_PORTABLE)], probe.result["system_info"]
    stamp = doctor.build_stamp()
    assert stamp is not None, "llama-cpp-python was not built by scripts/build-llama.sh"
    assert "-DGGML_NATIVE=OFF" in stamp and "GGML_NATIVE=ON" not in stamp, stamp


def test_build_features_reads_system_info():
    assert doctor.build_features(PORTABLE_INFO) == {"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2", "OPENMP"}
    assert doctor.build_features("CPU : AVX2 = 1 | AMX_INT8 = 1 | AVX512 = 0 |") == {"AVX2", "AMX_INT8"}


def test_llama_build_check_refuses_amx_and_native_kernels():
    check = doctor.check_llama_build(llama_probe(PORTABLE_INFO + " AMX_INT8 = 1 |"), AVX2_CPU | {"amx_int8"}, None)
    assert check.status == doctor.FAIL and "AMX_INT8" in check.detail and "build-llama.sh" in check.fix
    check = doctor.check_llama_build(llama_probe(PORTABLE_INFO + " AVX512 = 1 |"), AVX2_CPU | {"avx512f"}, None)
    assert check.status == doctor.FAIL and "AVX512" in check.detail
    check = doctor.check_llama_build(llama_probe(PORTABLE_INFO), AVX2_CPU, "x CMAKE_ARGS=-DGGML_NATIVE=ON")
    assert check.status == doctor.FAIL and "GGML_NATIVE=ON" in check.detail


def test_llama_build_check_sees_kernels_the_cpu_lacks():
    check = doctor.check_llama_build(llama_probe(PORTABLE_INFO), {"avx", "sse3"}, None)
    assert check.status == doctor.FAIL and "lacks AVX2" in check.detail
    assert doctor.SAFE_FLAGS in check.fix and "-DGGML_AVX2=OFF" in check.fix


def test_llama_build_check_passes_a_portable_build():
    check = doctor.check_llama_build(llama_probe(PORTABLE_INFO), AVX2_CPU, "llama-cpp-python==0.3.36 "
                                     "CMAKE_ARGS=-DGGML_NATIVE=OFF -DGGML_AVX2=ON")
    assert check.status == doctor.OK and "-DGGML_NATIVE=OFF" in check.detail


def test_a_crashing_library_is_reported_with_the_safe_rebuild(tmp_path):
    check = doctor.check_generate(BUNDLED["smollm2"], tmp_path, 1, "x86_64; flags: avx2", argv=SEGV)
    assert check.status == doctor.FAIL
    assert "SIGSEGV (segmentation fault)" in check.detail and "flags: avx2" in check.detail
    assert check.fix.endswith(doctor.SAFE_REBUILD)
    check = doctor.check_generate(BUNDLED["smollm2"], tmp_path, 1, "cpu", argv=SIGILL)
    assert "SIGILL (illegal instruction)" in check.detail


def test_a_probe_that_errors_or_hangs_is_reported():
    probe = doctor.run_probe([], argv=[sys.executable, "-c", "import sys; sys.exit('no such model')"])
    assert not probe.ok and probe.error == "no such model"
    probe = doctor.run_probe([], argv=[sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.5)
    assert not probe.ok and "no answer in" in probe.error


def test_doctor_cli_reports_a_crashing_build(monkeypatch):
    """`conclave doctor --smoke` with the generation probe pointed at a process that segfaults."""
    real = doctor.run_probe

    def crashing(args, argv=None, timeout=doctor.PROBE_TIMEOUT):
        return real(args, SEGV if args[0] == "generate" else argv, timeout)

    monkeypatch.setattr(doctor, "run_probe", crashing)
    result = CliRunner().invoke(main, ["doctor", "--smoke"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert [line for line in lines if line.startswith("FAIL  generate smollm2") and "SIGSEGV" in line]
    assert "fix: rebuild llama-cpp-python with safer flags: CONCLAVE_LLAMA_CMAKE_ARGS=" in result.output
    assert lines[-1] == "2 check(s) failed: see the fix under each"


@pytest.mark.real
def test_doctor_is_all_green_on_this_install(redis_prefix):
    """The real thing, as a user runs it: every check passes, Redis included."""
    env = {**os.environ, "CONCLAVE_REDIS_URL": "redis://127.0.0.1:6379/15", "CONCLAVE_REDIS_PREFIX": redis_prefix}
    proc = subprocess.run([str(Path(sys.executable).parent / "conclave"), "doctor", "--json"], capture_output=True,
                          text=True, env=env, timeout=600)
    report = json.loads(proc.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    assert proc.returncode == 0 and report["ok"], proc.stdout
    for name in ("python", "llama.cpp build", "store", "redis", "generate smollm2", "generate gemma-3-270m",
                 "encoder", "cpu"):
        assert by_name[name]["status"] == "ok", by_name[name]
    assert "1 token (" in by_name["generate smollm2"]["detail"]


def test_redis_check_fails_without_leaking_the_url():
    settings = load_settings({"CONCLAVE_HOME": "/tmp/x", "CONCLAVE_REDIS_URL": "redis://:s3cret@127.0.0.1:1/0"})
    check = doctor.check_redis(settings)
    assert check.status == doctor.FAIL and "s3cret" not in check.detail + check.fix
    assert doctor.check_redis(load_settings({"CONCLAVE_HOME": "/tmp/x"})).status == doctor.SKIP


def test_build_script_refuses_a_native_build():
    env = {**os.environ, "CONCLAVE_LLAMA_CMAKE_ARGS": "-DGGML_AVX2=ON"}
    proc = subprocess.run(["bash", str(ROOT / "scripts/build-llama.sh"), sys.prefix], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 2 and "-DGGML_NATIVE=OFF" in proc.stderr


@pytest.mark.real
def test_build_script_reuses_a_build_with_the_same_flags():
    if doctor.build_stamp() is None:
        pytest.skip("this venv's llama-cpp-python was not built by scripts/build-llama.sh")
    proc = subprocess.run(["bash", str(ROOT / "scripts/build-llama.sh"), sys.prefix], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "already built with these flags" in proc.stdout, proc.stdout + proc.stderr
