"""The Symbolic-MoE keyword extractor: parsing, agreement, and a real run with SmolLM2."""

import asyncio

import pytest

from experts_registry import BUNDLED
from service.pipeline.keywords import agreed, extract_keywords, parse_keywords


def test_parse_keywords_cleans_lists():
    assert parse_keywords("Algebra, 2. Calculus; derivatives.\n- Limits") == ["algebra", "calculus", "derivatives",
                                                                            "limits"]
    assert parse_keywords("Keywords: a very long keyword that goes on, physics") == ["physics"]
    assert parse_keywords("") == []


def test_agreement_needs_two_samples():
    samples = [["algebra", "calculus"], ["calculus", "geometry"], ["calculus", "algebra"], ["history"]]
    assert agreed(samples) == ["calculus", "algebra"]
    assert agreed(samples, min_agree=4) == []


def test_extract_with_a_scripted_expert():
    replies = iter(["math, algebra", "algebra, logic", "poetry", "algebra, math", "math"])

    async def call(expert, messages, params):
        from service.backends import Delta
        assert "Keywords:" in messages[0]["content"] and params.temperature == 0.7
        yield Delta(next(replies))
        yield Delta("", "stop", {})

    assert asyncio.run(extract_keywords(call, BUNDLED["smollm2"], "Solve x+1=2")) == ["math", "algebra"]


@pytest.mark.real
def test_extract_with_real_smollm2(fake_gateway):
    from service.backends import BackendPool
    from service.core.config import load_settings
    from service.pipeline.gateway import Gateway

    settings = load_settings()
    gw = Gateway(settings, fake_gateway.store, BackendPool(settings))

    async def run():
        try:
            return await extract_keywords(gw.call, BUNDLED["smollm2"], "What is the derivative of x^2?", n=3,
                                          min_agree=1, max_tokens=24)
        finally:
            await gw.backends.close()

    words = asyncio.run(run())
    # SmolLM2-135M rarely follows the keyword format (see docs/routing.md); what must hold is that three real
    # samples were generated and whatever was kept is a well-formed keyword.
    assert 'conclave_expert_calls_total{expert="smollm2",outcome="ok"} 3.0' in gw.metrics.render().decode()
    assert all(0 < len(w) <= 20 and w == w.lower() for w in words)
