#!/usr/bin/env bash
# Build and install llama-cpp-python into a venv with explicit, portable CPU flags.
#   bash scripts/build-llama.sh [VENV]            # default ./.venv
#   CONCLAVE_LLAMA_CMAKE_ARGS="..." bash scripts/build-llama.sh   # other flags (forces a rebuild)
#   CONCLAVE_LLAMA_REBUILD=1 bash scripts/build-llama.sh          # rebuild with the same flags
# Default on x86-64: AVX2 + FMA + F16C + BMI2, no AVX-512, no AMX, GGML_NATIVE off, so the same wheel
# runs on any x86-64 CPU with AVX2 wherever it was built.  Elsewhere: GGML_NATIVE off, ggml's defaults.
# The flags used are written to VENV/conclave-llama-build; `conclave doctor` reports them.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${1:-.venv}
version="0.3.36"
case "$(uname -m)" in
    x86_64|amd64)
        default="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON"
        default="$default -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF"
        default="$default -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF"
        default="$default -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" ;;
    *) default="-DGGML_NATIVE=OFF" ;;
esac
flags=${CONCLAVE_LLAMA_CMAKE_ARGS:-$default}
case " $flags " in
    *" -DGGML_NATIVE=OFF "*) ;;
    *) echo "build-llama: CONCLAVE_LLAMA_CMAKE_ARGS must contain -DGGML_NATIVE=OFF (a native build" \
            "is tied to the build machine's CPU)" >&2; exit 2 ;;
esac
stamp="$venv/conclave-llama-build"
want="llama-cpp-python==$version CMAKE_ARGS=$flags"

if [ -z "${CONCLAVE_LLAMA_REBUILD:-}" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
        && "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
    echo "llama-cpp-python $version already built with these flags ($stamp)"
    exit 0
fi
echo "building llama-cpp-python $version (4-10 min on 2 cores) with CMAKE_ARGS=$flags"
start=$(date +%s)
rm -f "$stamp"
CMAKE_ARGS="$flags" FORCE_CMAKE=1 "$venv/bin/pip" install --disable-pip-version-check -q \
    --no-cache-dir --force-reinstall --no-deps "llama-cpp-python==$version"
echo "$want" > "$stamp"
echo "llama-cpp-python built in $(( $(date +%s) - start )) s"
