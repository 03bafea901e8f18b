"""Raw prompts (``/v1/completions``) on a llama.cpp model: the prompt verbatim or as token ids, no
template, no system prompt; ``echo`` and ``logprobs`` computed from the model's own logits.

llama-cpp-python only returns logprobs from a ``Llama`` built with ``logits_all=True``, which keeps a
(n_ctx x vocabulary) float buffer for the model's whole life (400 MB for SmolLM2 at 2,048 tokens, 2 GB
for Gemma 3's 262k vocabulary).  Instead, a job that asks for logprobs switches that mode on for
itself only (:func:`all_logits`): a buffer of (prompt + max_tokens) rows is made for the job and dropped
after it, and the model state is reset on both sides (so no row comes from a run that kept no logits).
Jobs without logprobs, and chat, keep llama.cpp's default (the last position's logits only).

Sampling (:func:`sample`) runs on ``Llama.generate`` with llama-cpp-python's ``create_completion``
defaults (temperature 0.8, top_p 0.95, top_k 40, min_p 0.05), stops at an end-of-generation token, a
stop string or ``max_tokens``, and holds back text that could be the start of a stop string.
Logprobs (:func:`entries`) are log-softmax values of the kept logits (row j-1 scores token j); the
first echoed token has none (OpenAI's ``null``); ``top_logprobs`` lists the k best tokens plus the
chosen one.  Token strings are llama.cpp's pieces; ``text_offset`` counts characters from the start of
the returned text (echo) or of the prompt.
"""

from __future__ import annotations

import random
from contextlib import contextmanager

from experts_registry.errors import ContextLengthExceeded, InvalidRequest
from experts_registry.model import Expert

from ..core.backend import Delta, usage_dict
from ..core.completions import entry, raw_prompt
from .base import Job


def generate_raw(llm, expert: Expert, job: Job) -> None:
    p = job.params
    prompt = raw_prompt(job.messages)
    context, skip = _context(llm, expert, prompt)
    n = min(p.max_tokens, llm.n_ctx() - len(context))
    prompt_text = prompt if isinstance(prompt, str) else _text(llm, context[skip:])
    echoed = prompt_text if p.echo else ""
    if p.logprobs:
        with all_logits(llm, len(context) + n + 1):
            out, text, finish = sample(llm, context, p, n, job)
            if n <= 0:
                llm.eval(context)
            found = entries(llm, context, out, skip, p.top_logprobs or 0, p.echo, len(prompt_text))
        if not job.cancel.is_set():
            job.emit(Delta(echoed + text, logprobs=found))
    else:
        if echoed:
            job.emit(Delta(echoed))
        out, _, finish = sample(llm, context, p, n, job, emit=True)
    job.emit(Delta("", finish, usage_dict(len(context), len(out))))


def _context(llm, expert: Expert, prompt: str | list[int]) -> tuple[list[int], int]:
    """The tokens the model reads (a BOS first when the model adds one) and how many were added."""
    if isinstance(prompt, str):
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    else:
        ids = list(prompt)
        bad = next((t for t in ids if t >= llm.n_vocab()), None)
        if bad is not None:
            raise InvalidRequest(f"prompt: token id {bad} is outside expert {expert.name!r}'s vocabulary "
                                 f"({llm.n_vocab()} tokens)", param="prompt")
    head = llm.tokenize(b"", add_bos=True, special=True)   # [BOS] when the model adds one, else []
    bos = [] if ids[: len(head)] == head else head
    context = bos + ids
    if not context:
        raise InvalidRequest(f"prompt: empty, and expert {expert.name!r} has no BOS token to start from",
                             param="prompt")
    if len(context) >= llm.n_ctx():
        raise ContextLengthExceeded(
            f"this model's maximum context length is {llm.n_ctx()} tokens, but your prompt came to "
            f"{len(context)} tokens (expert {expert.name!r}): shorten it or pick an expert with a longer context",
            param="prompt", expert=expert.name)
    return context, len(bos)


@contextmanager
def all_logits(llm, rows: int):
    """Keep every position's logits (``llm.scores``) for one job, in a buffer of ``rows`` rows."""
    import numpy as np

    saved = llm._logits_all, llm.scores
    llm._logits_all, llm.scores = True, np.zeros((max(1, rows), llm.n_vocab()), dtype=np.single)
    llm.reset()   # no prefix reuse: every row is computed by this job
    try:
        yield
    finally:
        llm._logits_all, llm.scores = saved
        llm.reset()


def sample(llm, context: list[int], p, n: int, job: Job, emit: bool = False) -> tuple[list[int], str, str]:
    """Up to ``n`` tokens after ``context``: (token ids, text, finish_reason); streamed to the job if ``emit``."""
    if n <= 0:
        return [], "", "length"
    import llama_cpp

    llm.set_seed(p.seed & 0xFFFFFFFF if p.seed is not None else random.randrange(2**32))
    stops, hold = list(p.stop), max((len(s) for s in p.stop), default=1) - 1
    out, raw, text, sent, finish = [], b"", "", 0, "length"
    for tok in llm.generate(context, temp=0.8 if p.temperature is None else p.temperature,
                            top_p=0.95 if p.top_p is None else p.top_p, top_k=40, min_p=0.05, repeat_penalty=1.0):
        if job.cancel.is_set():
            break
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
            finish = "stop"
            break
        out.append(tok)
        raw += llm.detokenize([tok])
        text = raw.decode("utf-8", errors="ignore")   # an incomplete character waits for its next token
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            text, finish, out = text[:cut], "stop", _upto(llm, out, cut)
            break
        if emit and len(text) - hold > sent:
            job.emit(Delta(text[sent: len(text) - hold]))
            sent = len(text) - hold
        if len(out) >= n:
            break
    if emit and len(text) > sent:
        job.emit(Delta(text[sent:]))
    return out, text, finish


def _upto(llm, out: list[int], chars: int) -> list[int]:
    """The tokens that start before character ``chars`` of their text (a stop string cut the rest)."""
    kept, raw = [], b""
    for tok in out:
        if len(raw.decode("utf-8", errors="ignore")) >= chars:
            break
        kept.append(tok)
        raw += llm.detokenize([tok])
    return kept


def entries(llm, context: list[int], out: list[int], skip: int, k: int, echo: bool, prompt_chars: int) -> list[dict]:
    """Logprobs entries (``core.completions.entry``) of the echoed prompt (if ``echo``) and the answer."""
    seq = context + out
    first = skip if echo else len(context)
    scored = [j for j in range(first, len(seq)) if j >= 1 and not (echo and j == first)]
    lps, tops = logprobs_of(llm.scores[[j - 1 for j in scored]], [seq[j] for j in scored], k) if scored else ([], [])
    by_pos = dict(zip(scored, zip(lps, tops)))
    found, at = [], 0 if echo else prompt_chars
    for j in range(first, len(seq)):
        token = _text(llm, [seq[j]])
        lp, top = by_pos.get(j, (None, None))
        top = None if top is None else {**{_text(llm, [i]): v for i, v in top}, token: lp}
        found.append(entry(token, lp, top, at))
        at += len(token)
    return found


def logprobs_of(logits, targets: list[int], k: int) -> tuple[list[float], list[list[tuple[int, float]]]]:
    """Log-softmax of each row: the target's logprob and the ``k`` best (token id, logprob), best first."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float32)
    lse = x.max(axis=1) + np.log(np.exp(x - x.max(axis=1, keepdims=True)).sum(axis=1))
    rows = np.arange(len(targets))
    picked = (x[rows, targets] - lse).tolist()
    if k <= 0:
        return picked, [[] for _ in targets]
    best = np.argpartition(-x, k - 1, axis=1)[:, :k]
    tops = []
    for r, ids in enumerate(best):
        ids = sorted(ids.tolist(), key=lambda i: -x[r, i])
        tops.append([(i, float(x[r, i] - lse[r])) for i in ids])
    return picked, tops


def _text(llm, tokens: list[int]) -> str:
    return llm.detokenize(tokens).decode("utf-8", errors="ignore")
