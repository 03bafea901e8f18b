"""Final-answer extraction over realistic (and malformed) model outputs."""

from __future__ import annotations

import pytest

from aggregators.extract import (choice_letters, extract_answer, extract_choice, extract_number,
                                 strip_thinking)

LLAMA_COT = """Let's think step by step. A field requires x^2 + c to be irreducible over Z_3.
For c = 0, x^2 has root 0. For c = 1, x^2 + 1: 0 -> 1, 1 -> 2, 2 -> 2, so no root.
For c = 2, x^2 + 2 has root 1. The answer is (B)."""

QWEN_THINKING = """<think>
Okay, the user asks about sacral torsion. Maybe the answer is (A)? No wait.
</think>

The deep sulcus on the left with a posterior ILA on the right indicates a left-on-left torsion.

**Answer:** (A)"""


@pytest.mark.parametrize("text, expected", [
    (LLAMA_COT, "B"),
    (QWEN_THINKING, "A"),
    ("the answer is C", "C"),
    ("The answer is: D.", "D"),
    ("Therefore the final answer is $\\boxed{C}$", "C"),
    ("\\boxed{\\text{(B)}}", "B"),
    ("Answer: A", "A"),
    ("**Answer: B**", "B"),
    ("**Answer:** (C) 12 moles", "C"),
    ("The correct option is B: it is a field.", "B"),
    ("After checking, option D is correct.", "D"),
    ("All in all, the best match is (C).", "C"),         # bare "(X)" ending the text
    ("(B)", "B"),
    ("D", "D"),
    ("The answer is (b)", "B"),                        # lower case is fine inside parentheses
    ("The answer is I think (C)", "C"),                # "I" is a word here, not option I
    ("The answer is A bit unclear, but (D)", "D"),
    ("The answer is: \n\n**B) Jupiter**", "B"),
    ("My final answer is option C.", "C"),
    ("ANSWER: D", "D"),
    ("Answer: (A) is tempting, but it ignores friction.\nAnswer: (C)", "C"),
    ("A: Let's think step by step. Friction halves it. The answer is (B).", "B"),
    ("A. closed", "A"),                                # opens with an option: small models do this
    ("B. causing confusion during refutation because of a", "B"),
    (" B\nExplanation: Gamma rays are the most penetrating", "B"),
    ("(C) 12 moles, since the ratio", "C"),
    ("A. 5 million\n\nThe answer is", "A"),             # an unfinished statement adds nothing
    ("A. evolutionary\n\nThe correct answer is (D)", "D"),   # a stated answer beats the opening
])
def test_multiple_choice_forms(text, expected):
    assert extract_choice(text, "ABCD") == expected


@pytest.mark.parametrize("text", [
    "",
    None,
    "I cannot answer this question.",
    "I'm sorry, but I can't help with that.",
    "The answer is (G).",                              # outside A-D
    "The answer is (A) or (B).",                       # hedged
    "The answer is B or C, depending on the convention.",
    "<think>The answer is (B).</think>",               # only inside hidden thinking
    "<think>Let me reason. The answer is (C) maybe, but",  # unclosed: generation cut while thinking
    "The answer is the second one.",
    "the answer is c",                                 # a bare lower-case letter is too ambiguous
    "A heat pump is to extract heat from an outdoor",  # the article "A", not option A
    "A: Let's think step by step. Friction",          # "A:" opens an answer turn, names no option
    "The answer is (X)",                               # the instruction's placeholder copied
])
def test_unparsable_gives_none(text):
    assert extract_choice(text, "ABCD") is None


def test_last_stated_answer_wins():
    text = "At first the answer is (A). Wait, I made an error in step 2. Re-checking: the answer is (D)."
    assert extract_choice(text) == "D"
    assert extract_choice("Answer: B\n\nHmm, actually \\boxed{C}") == "C"


def test_explicit_statement_beats_a_trailing_bare_option():
    text = "The answer is (B). Note that (A) and (C) are common distractors, unlike (D)."
    assert extract_choice(text, "ABCD") == "B"


def test_out_of_range_last_answer_is_not_replaced_by_an_earlier_one():
    assert extract_choice("The answer is (B). Hmm, no: the answer is (F).", "ABCD") is None
    assert extract_choice("The answer is (B). Hmm, no: the answer is (F).", "ABCDEF") == "F"


def test_letters_up_to_j_for_mmlu_pro():
    assert extract_choice("Summing the forces gives 12 N. The answer is (J).") == "J"
    assert extract_choice("The answer is (J).", "ABCD") is None


def test_thinking_closed_without_opener_is_dropped():
    # chat templates that open <think> in the prompt: the output starts mid-thought
    text = "so the answer is (A)... no.\n</think>\nThe answer is (C)."
    assert extract_choice(text) == "C"
    assert strip_thinking(text) == "The answer is (C)."


@pytest.mark.parametrize("text, expected", [
    ("The answer is 42", "42"),
    ("The answer is **42**.", "42"),
    ("The answer is $42$ apples", "42"),
    ("The answer is 1,000,000", "1000000"),
    ("So the total is 1,000 + 200. The answer is 1,200 dollars.", "1200"),
    ("The final answer is $\\boxed{3.50}$.", "3.5"),
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("\\boxed{\\dfrac{2}{6}}", "1/3"),
    ("x = 3 - 10\nx = -7", "-7"),
    ("Answer: −7", "-7"),                              # unicode minus
    ("The answer is 10.0", "10"),
    ("42", "42"),
    ("The answer is 12. Wait, I forgot the carry: the answer is 13.", "13"),
])
def test_numbers(text, expected):
    assert extract_number(text) == expected


@pytest.mark.parametrize("text", ["The answer is 3x", "The answer is 5 or 6", "No idea.",
                                  "The answer is 2^10", "The answer is 3 \\times 10^8",
                                  "<think>The answer is 4</think>", "\\boxed{x+1}"])
def test_numbers_unparsable(text):
    assert extract_number(text) is None


def test_equivalent_numbers_vote_together():
    forms = ["The answer is 1000", "The answer is 1,000.", "\\boxed{1000.00}", "= 1000"]
    assert {extract_number(t) for t in forms} == {"1000"}


def test_auto_mode_takes_letter_or_number_and_mc_mode_only_letters():
    assert extract_answer("The answer is (C)") == "C"
    assert extract_answer("The answer is 17") == "17"
    assert extract_answer("The answer is 17", "ABCD") is None
    assert extract_answer("Write me a poem? Sure: roses are red.") is None


def test_strip_thinking_variants():
    assert strip_thinking("<think>\nsecret\n</think>\n\nHello") == "Hello"
    assert strip_thinking("<THINKING>a</THINKING>b<think>c</think>d") == "bd"
    assert strip_thinking("<think>never closed, cut by max_tokens") == ""
    assert strip_thinking("Visible. <think>late and unclosed") == "Visible."
    assert strip_thinking(None) == ""
    assert strip_thinking("  plain  ") == "plain"


def test_choice_letters():
    assert choice_letters(4) == "ABCD"
    assert choice_letters(10) == "ABCDEFGHIJ"
    with pytest.raises(ValueError):
        choice_letters(11)
