"""Rendering conversations for chat and completion (base-model) experts."""

from experts_registry.model import Expert
from service.core.prompting import chat_messages, completion_prompt

BASE = Expert(name="base", backend="llamacpp", model="x.gguf", prompt_style="completion",
              template="Q: {prompt}\nA:", system_prompt="Q: 1+1?\nA: 2")


def test_completion_prompt_leaves_the_last_turn_open():
    msgs = [{"role": "user", "content": "2+2?"}]
    assert completion_prompt(BASE, msgs) == "Q: 1+1?\nA: 2\n\nQ: 2+2?\nA:"


def test_completion_prompt_renders_history_as_solved_turns():
    msgs = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": " 4 "}, {"role": "user", "content": "3+3?"}]
    assert completion_prompt(BASE, msgs) == "Q: 1+1?\nA: 2\nAnswer briefly.\n\nQ: 2+2?\nA: 4\n\nQ: 3+3?\nA:"


def test_completion_prompt_with_default_template_and_no_system():
    e = Expert(name="b", backend="llamacpp", model="x.gguf", prompt_style="completion")
    assert completion_prompt(e, [{"role": "user", "content": "hi"}]) == "Q: hi\nA:"


def test_chat_messages_merge_expert_and_request_system_prompts():
    e = Expert(name="c", backend="llamacpp", model="x.gguf", system_prompt="You are a mathematician.")
    msgs = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"},
            {"role": "tool", "content": "42"}]
    assert chat_messages(e, msgs) == [
        {"role": "system", "content": "You are a mathematician.\n\nBe brief."},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "[tool result]\n42"},
    ]

