"""Raw prompts (``/v1/completions``) on the vLLM worker: the prompt's token ids (a BOS the model needs
put first, never echoed), the ``SamplingParams`` fields for logprobs and echo (``logprobs`` for the
answer, ``prompt_logprobs`` for the echoed prompt), and the answer as one Delta with logprobs entries
(``service.core.completions.entry``).  vLLM generates at least one token: ``max_tokens`` 0 (prompt scoring)
runs one and drops it.  Token strings are vLLM's own ``decoded_token``; the first echoed token has no
logprob (OpenAI's ``null``)."""

from __future__ import annotations

from experts_registry.errors import InvalidRequest

from ..core.backend import Delta, usage_dict
from ..core.completions import entry, raw_prompt
from .base import Job


def raw_ids(tokenizer, messages: list[dict]) -> tuple[list[int], int]:
    """The ids the model reads and how many were put first (a BOS the client did not send)."""
    prompt = raw_prompt(messages)
    ids = list(prompt) if isinstance(prompt, list) else tokenizer.encode(prompt, add_special_tokens=False)
    if ids and max(ids) >= len(tokenizer):
        raise InvalidRequest(f"prompt: token id {max(ids)} is outside this model's vocabulary ({len(tokenizer)} "
                             "tokens)", param="prompt")
    head = tokenizer.encode("", add_special_tokens=True)   # [BOS] when the model adds one, else []
    bos = [] if ids[: len(head)] == head else head
    return bos + ids, len(bos)


def scoring_fields(params, room: int) -> dict:
    """SamplingParams fields of a raw job: max_tokens (at least 1), logprobs, prompt_logprobs with echo."""
    fields = {"max_tokens": max(1, min(params.max_tokens, room))}
    if params.logprobs:
        fields["logprobs"] = params.top_logprobs or 0
        if params.echo:
            fields["prompt_logprobs"] = params.top_logprobs or 0
    return fields


def deliver_raw(tokenizer, job: Job, out) -> None:
    """One Delta with the echoed prompt (if asked), the answer and their logprobs, then usage."""
    if job.cancel.is_set():
        return
    p, choice = job.params, out.outputs[0]
    ids, skip = raw_ids(tokenizer, job.messages)
    prompt = raw_prompt(job.messages)
    prompt_text = prompt if isinstance(prompt, str) else tokenizer.decode(ids[skip:])
    scoring_only = p.max_tokens == 0
    gen_ids = [] if scoring_only else list(choice.token_ids)
    text = "" if scoring_only else choice.text
    finish = "length" if scoring_only or choice.finish_reason == "length" else "stop"
    found = None
    if p.logprobs:
        k, found = p.top_logprobs or 0, []
        at = 0 if p.echo else len(prompt_text)
        if p.echo:
            for j in range(skip, len(ids)):
                found.append(_entry(tokenizer, ids[j], out.prompt_logprobs[j], k, at, first=j == skip))
                at += len(found[-1]["token"])
        for j, tid in enumerate(gen_ids):
            found.append(_entry(tokenizer, tid, choice.logprobs[j], k, at))
            at += len(found[-1]["token"])
    job.emit(Delta((prompt_text if p.echo else "") + text, logprobs=found))
    job.emit(Delta("", finish, usage_dict(len(ids), len(gen_ids))))


def _entry(tokenizer, tid: int, ranked: dict | None, k: int, at: int, first: bool = False) -> dict:
    """The entry of token ``tid`` from vLLM's {token id: Logprob} at its position."""
    chosen = (ranked or {}).get(tid)
    token = chosen.decoded_token if chosen is not None and chosen.decoded_token is not None \
        else tokenizer.decode([tid])
    if first or chosen is None:
        return entry(token, None, None, at)
    best = sorted((lp for i, lp in ranked.items() if lp.rank is not None), key=lambda lp: lp.rank)[:k]
    top = {lp.decoded_token or "": lp.logprob for lp in best}
    return entry(token, chosen.logprob, {**top, token: chosen.logprob}, at)
