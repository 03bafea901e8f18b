"""The aggregator seam: first, vote (tie-breaking), synthesis plans, failures."""

from __future__ import annotations

import json

import pytest

from aggregators import AGGREGATORS, Candidate, Final, Synthesize
from aggregators.synthesis import clip, synthesis_messages
from experts_registry.errors import InvalidRequest, UpstreamError

Q = "Which planet is largest?\n(A) Mars\n(B) Jupiter\n(C) Venus\n(D) Earth"


def cand(expert, answer, score, error=None, prefix="Let's think. "):
    text = f"{prefix}The answer is ({answer})." if answer else "I am not sure about this one."
    return Candidate(expert, text if error is None else "", score, error)


def plan(name, candidates, **kw):
    result = AGGREGATORS[name]().plan(Q, candidates, **kw)
    json.dumps(result.detail)                          # the detail must be JSON-able
    return result


def test_registry_is_a_plain_dict_of_factories():
    assert set(AGGREGATORS) == {"first", "vote", "synthesis"}
    assert all(AGGREGATORS[n]().name == n for n in AGGREGATORS)


# --- first -----------------------------------------------------------------------------------

def test_first_returns_best_ranked_survivor():
    cs = [cand("a", "A", 0.9, error="timeout after 30 s"), cand("b", "B", 0.5), cand("c", "C", 0.7)]
    out = plan("first", cs)
    assert isinstance(out, Final)
    assert (out.winner, out.text) == ("c", cs[2].text)
    assert out.detail["failed"] == {"a": "timeout after 30 s"}
    assert out.detail["experts"] == ["c", "b"]


def test_empty_response_counts_as_failed():
    out = plan("first", [Candidate("a", "   ", 0.9), cand("b", "B", 0.1)])
    assert out.winner == "b"
    assert out.detail["failed"] == {"a": "empty response"}


@pytest.mark.parametrize("name", ["first", "vote", "synthesis"])
def test_all_failed_raises_upstream_error_naming_every_expert(name):
    cs = [cand("alpha", "A", 0.9, error="timeout after 30 s"), cand("beta", "B", 0.5, error="HTTP 500"),
          Candidate("gamma", "", 0.2)]
    with pytest.raises(UpstreamError) as info:
        plan(name, cs)
    err = info.value
    assert err.status == 502
    for part in ("alpha: timeout after 30 s", "beta: HTTP 500", "gamma: empty response"):
        assert part in err.message
    assert err.expert == "alpha, beta, gamma"


def test_no_candidates_is_an_upstream_error():
    with pytest.raises(UpstreamError):
        plan("vote", [])


def test_bad_choices_is_the_callers_mistake():
    with pytest.raises(InvalidRequest) as info:
        plan("vote", [cand("a", "A", 1.0)], choices="A1")
    assert info.value.param == "choices"


# --- vote ------------------------------------------------------------------------------------

def test_vote_majority_wins_over_higher_scores():
    cs = [cand("top", "A", 0.95), cand("m1", "B", 0.30), cand("m2", "B", 0.40)]
    out = plan("vote", cs, choices="ABCD")
    assert out.detail["answer"] == "B"
    assert out.detail["votes"] == {"A": 1, "B": 2}
    assert out.winner == "m2"                          # the winning answer's best-scored voter
    assert out.text == cs[2].text                      # its full response
    assert out.detail["tie_break"] is None


def test_vote_tie_broken_by_sum_of_scores():
    # A: 0.9 + 0.1 = 1.0 ; B: 0.6 + 0.5 = 1.1 -> B, although A has the single best score
    cs = [cand("a1", "A", 0.9), cand("a2", "A", 0.1), cand("b1", "B", 0.6), cand("b2", "B", 0.5)]
    out = plan("vote", cs, choices="ABCD")
    assert (out.detail["answer"], out.winner, out.detail["tie_break"]) == ("B", "b1", "score_sum")


def test_vote_tie_broken_by_best_single_score_when_sums_are_equal():
    # A: 0.7 + 0.3 = 1.0 ; B: 0.5 + 0.5 = 1.0 -> A (best voter 0.7)
    cs = [cand("b1", "B", 0.5), cand("a2", "A", 0.3), cand("b2", "B", 0.5), cand("a1", "A", 0.7)]
    out = plan("vote", cs, choices="ABCD")
    assert (out.detail["answer"], out.winner, out.detail["tie_break"]) == ("A", "a1", "best_score")


def test_vote_full_tie_falls_back_to_router_order():
    cs = [cand("x", "C", 0.5), cand("y", "D", 0.5)]
    out = plan("vote", cs, choices="ABCD")
    assert (out.detail["answer"], out.winner, out.detail["tie_break"]) == ("C", "x", "rank")


def test_vote_ignores_unparsable_and_failed():
    cs = [cand("lost", None, 0.99), cand("dead", "A", 0.98, error="connection refused"),
          cand("ok", "D", 0.10)]
    out = plan("vote", cs, choices="ABCD")
    assert (out.detail["answer"], out.winner) == ("D", "ok")
    assert out.detail["unparsed"] == ["lost"]
    assert out.detail["failed"] == {"dead": "connection refused"}
    assert out.detail["answers"] == {"lost": None, "ok": "D"}


def test_vote_nobody_parses_falls_back_to_best_ranked():
    cs = [cand("a", None, 0.2), cand("b", None, 0.8)]
    out = plan("vote", cs, choices="ABCD")
    assert out.winner == "b"
    assert out.detail["answer"] is None
    assert "no expert stated a parsable final answer" in out.detail["fallback"]


def test_vote_out_of_range_letter_does_not_vote():
    cs = [cand("a", "F", 0.9), cand("b", "F", 0.8), cand("c", "B", 0.1)]
    assert plan("vote", cs, choices="ABCD").detail["answer"] == "B"
    assert plan("vote", cs).detail["answer"] == "F"   # without choices, A-J are all allowed


def test_vote_on_recorded_letters_as_replay_stores_them():
    # replay data holds bare letters ("NONE" = unparsable): they vote as they are
    cs = [Candidate("m1", "B", 0.2), Candidate("m2", "NONE", 0.9), Candidate("m3", "B", 0.1),
          Candidate("m4", "J", 0.8)]
    out = plan("vote", cs, choices="ABCDEFGHIJ")
    assert (out.detail["answer"], out.winner, out.detail["unparsed"]) == ("B", "m1", ["m2"])


def test_vote_numbers_and_thinking():
    cs = [Candidate("a", "<think>The answer is 12</think>The answer is 1,000.", 0.3),
          Candidate("b", "Adding up gives \\boxed{1000}", 0.2),
          Candidate("c", "The answer is 12", 0.9)]
    out = plan("vote", cs)
    assert (out.detail["answer"], out.winner) == ("1000", "a")
    assert out.text.startswith("<think>")             # the winner's full response, unchanged


# --- synthesis -------------------------------------------------------------------------------

def test_synthesis_prompt_strips_thinking_and_leaves_out_failed():
    cs = [Candidate("a", "<think>secret musing</think>Jupiter is largest. The answer is (B).", 0.9),
          cand("b", "A", 0.5, prefix="Mars is red. "),
          Candidate("c", "", 0.8, error="timeout after 30 s")]
    out = plan("synthesis", cs, choices="ABCD")
    assert isinstance(out, Synthesize)
    assert len(out.messages) == 1 and out.messages[0]["role"] == "user"
    content = out.messages[0]["content"]
    assert "secret musing" not in content
    assert "### Response 1\nJupiter is largest. The answer is (B)." in content
    assert "### Response 2\nMars is red. The answer is (A)." in content
    assert "### Response 3" not in content
    assert "some of these responses may be wrong" in content.lower()
    assert "critically" in content
    # order: instruction, responses, then the question, then the format instruction
    assert content.index("Responses:") < content.index("Question:\n" + Q) < content.index("The answer is (X)")
    assert content.rstrip().endswith("(A, B, C, D).")
    assert out.detail["failed"] == {"c": "timeout after 30 s"}
    assert out.detail["answers"] == {"a": "B", "b": "A"}


def test_synthesis_keeps_experts_anonymous():
    cs = [cand("llama-3.1-8b-instruct", "B", 0.9), cand("qwen2.5-7b-instruct", "A", 0.5)]
    content = plan("synthesis", cs, choices="ABCD").messages[0]["content"]
    assert "llama" not in content and "qwen" not in content


def test_synthesis_without_choices_has_no_letter_format():
    msgs = synthesis_messages("Write a haiku about rain.", ["Rain falls...", "Drops on tin..."])
    assert "The answer is" not in msgs[0]["content"]
    assert msgs[0]["content"].rstrip().endswith("Give one complete, self-contained answer to the question.")


def test_synthesis_single_survivor_is_final():
    cs = [cand("a", "B", 0.9), cand("b", "C", 0.8, error="HTTP 503")]
    out = plan("synthesis", cs, choices="ABCD")
    assert isinstance(out, Final)
    assert (out.winner, out.text) == ("a", cs[0].text)
    assert "without synthesis" in out.detail["note"]


def test_synthesis_clips_long_candidates_keeping_the_conclusion():
    long = "step " * 2000 + "The answer is (C)."
    out = AGGREGATORS["synthesis"](max_chars=300).plan(Q, [Candidate("a", long, 1), cand("b", "B", 0.5)])
    content = out.messages[0]["content"]
    assert "[...]" in content and "The answer is (C)." in content
    assert len(content) < 1500
    assert clip("short", 300) == "short"


def test_replay_vote_agrees_with_the_vote_aggregator():
    """The vectorised vote used by `conclave bench replay` and the gateway's `vote` aggregator pick the
    same answer on recorded letters (k <= 3, scores falling with rank, 'NONE' = no vote)."""
    import numpy as np

    from aggregators import VoteAggregator
    from aggregators.base import Candidate
    from router.vote import LETTERS, vote

    rng = np.random.default_rng(0)
    for _ in range(300):
        k = int(rng.integers(1, 4))
        answers = rng.integers(-1, 4, size=k)
        texts = [LETTERS[a] if a >= 0 else "NONE" for a in answers]
        candidates = [Candidate(f"e{i}", t, score=1.0 - i / 10) for i, t in enumerate(texts)]
        plan = VoteAggregator().plan("q", candidates, choices="ABCD")
        expected = vote(answers[None, :])[0]
        got = plan.detail["answer"]
        assert (LETTERS[expected] if expected >= 0 else None) == got, (texts, plan.detail)
