#!/usr/bin/env bash
# LiteLLM's proxy, pinned, in its own venv (./.venv-litellm-proxy): the load benchmark's comparison
# point (benchmarks/perf/bench_load.py calls this script when the venv is missing). Never in ./.venv: the
# [proxy] extra pulls its own server stack.
#   VENV=path bash scripts/install-litellm-proxy.sh   # another venv location
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-.venv-litellm-proxy}
python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
start=$(date +%s)
"$venv/bin/pip" install --disable-pip-version-check -q "litellm[proxy]==1.106.2"
LITELLM_LOCAL_MODEL_COST_MAP=True "$venv/bin/python" -c "import litellm.proxy.proxy_server" \
    || { echo "litellm[proxy] installed but its proxy does not import: see above" >&2; exit 1; }
echo "litellm proxy 1.106.2 installed in $venv in $(( $(date +%s) - start )) s"
