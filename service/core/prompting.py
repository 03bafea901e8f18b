"""Turn a conversation into what an expert expects: chat messages or one completion prompt."""

from __future__ import annotations

from experts_registry.errors import InvalidRequest
from experts_registry.model import Expert


def text_of(message: dict) -> str:
    """A message's text: its content string, or its text parts joined (images and audio left out)."""
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content or ""


def text_turns(expert: Expert, messages: list[dict]) -> list[dict]:
    """The messages with their content as text, for a prompt made of text. An image or audio part cannot
    become text: a 400 naming the part and the expert, never a silent drop (code ``invalid_request``, which
    the Redis queue's reply keeps a 400)."""
    for i, m in enumerate(messages):
        for j, part in enumerate(m["content"] if isinstance(m.get("content"), list) else ()):
            if isinstance(part, dict) and part.get("type") != "text":
                raise InvalidRequest(f"expert {expert.name!r} takes text only: the {part.get('type')} part "
                                     f"messages[{i}].content[{j}] cannot be part of its prompt; send it to an "
                                     "expert that takes it", param=f"messages[{i}].content[{j}].type")
    return [{**m, "content": text_of(m)} for m in messages]


def chat_messages(expert: Expert, messages: list[dict]) -> list[dict]:
    """Plain ``{"role", "content"}`` text dicts, with the expert's system prompt merged in first."""
    out: list[dict] = []
    messages = text_turns(expert, messages)
    system = [m["content"] for m in messages if m["role"] in ("system", "developer") and m["content"]]
    if expert.system_prompt:
        system.insert(0, expert.system_prompt)
    if system:
        out.append({"role": "system", "content": "\n\n".join(system)})
    for m in messages:
        if m["role"] in ("user", "assistant"):
            out.append({"role": m["role"], "content": m["content"]})
        elif m["role"] == "tool":
            out.append({"role": "user", "content": f"[tool result]\n{m['content']}"})
    return out


def native_messages(expert: Expert, messages: list[dict]) -> list[dict]:
    """For an OpenAI-compatible expert: the system turns merged as in :func:`chat_messages`, every
    other turn as the client sent it (content parts, role ``tool`` results, assistant ``tool_calls``)."""
    system = chat_messages(expert, [m for m in messages if m["role"] in ("system", "developer")])
    return system + [m for m in messages if m["role"] not in ("system", "developer")]


def completion_prompt(expert: Expert, messages: list[dict]) -> str:
    """A base model's prompt: earlier turns filled into the template as solved examples,
    the last user turn left open, e.g. ``Q: ...\\nA: ...\\n\\nQ: <last>\\nA:``."""
    messages = text_turns(expert, messages)
    template = expert.completion_template
    parts: list[str] = []
    system = [m["content"] for m in messages if m["role"] in ("system", "developer") and m["content"]]
    if expert.system_prompt:
        system.insert(0, expert.system_prompt)
    if system:
        parts.append("\n".join(system))
    pending: str | None = None
    for m in messages:
        if m["role"] in ("user", "tool"):
            if pending is not None:
                parts.append(template.format(prompt=pending))
            pending = m["content"]
        elif m["role"] == "assistant" and pending is not None:
            parts.append(template.format(prompt=pending) + " " + m["content"].strip())
            pending = None
    parts.append(template.format(prompt=pending if pending is not None else ""))
    return "\n\n".join(parts)
