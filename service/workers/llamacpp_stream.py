"""One llama.cpp generation, token by token, streamed as Deltas.

The worker runs ``Llama.generate`` itself (rather than ``create_completion``) so that each sampled
token is known: its log-probability comes from the step that chose it (``llamacpp_fields.Logits``), with
no ``logits_all`` (which would keep n_ctx x n_vocab floats per model).  Stop strings are handled here:
text that could be the start of one is held back until it is not, and the answer ends before it.
Sampling defaults are llama-cpp-python's (temperature 0.8, top_p 0.95, top_k 40, min_p 0.05).
"""

from __future__ import annotations

import codecs
import random
from typing import Callable

from ..core.backend import Delta
from .llamacpp_fields import Logits, Options, entry

DEFAULTS = {"temp": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "typical_p": 1.0, "repeat_penalty": 1.0}


class Text:
    """The answer so far: decoded incrementally (UTF-8 split across tokens), stop strings cut off,
    logprob entries released with the text they belong to."""

    def __init__(self, stop: list[str]):
        self.stop = [s for s in stop if s]
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text, self.sent = "", 0
        self.entries: list[tuple[int, dict]] = []   # (start offset in text, entry), not yet released
        self.stopped = False

    def add(self, piece: bytes, logprob: dict | None) -> None:
        start = len(self.text)
        self.text += self.decoder.decode(piece)
        if logprob is not None:
            self.entries.append((start, logprob))
        hits = [i for s in self.stop if (i := self.text.find(s, max(0, self.sent - len(s)))) >= 0]
        if hits:
            self.text, self.stopped = self.text[: max(min(hits), self.sent)], True

    def release(self, final: bool = False) -> tuple[str, list[dict]]:
        """The text that can go out now (all of it when ``final``), and its logprob entries."""
        if final and not self.stopped:
            self.text += self.decoder.decode(b"", final=True)
        end = len(self.text) if final or self.stopped else len(self.text) - self._held()
        everything = final and not self.stopped   # the last tokens may have decoded to nothing yet
        out, self.sent = self.text[self.sent: end], end
        ready = [e for start, e in self.entries if start < end or everything]
        self.entries = [(start, e) for start, e in self.entries if not (start < end or everything)]
        return out, ready

    def _held(self) -> int:
        """How many trailing characters could begin a stop string."""
        tail = self.text[self.sent:]
        return max((n for s in self.stop for n in range(min(len(s) - 1, len(tail)), 0, -1)
                    if tail.endswith(s[:n])), default=0)


def sampling(llm, params, opts: Options) -> dict:
    """Keyword arguments of ``Llama.generate`` for the request (seeding the model as a side effect)."""
    kwargs = dict(DEFAULTS)
    if params.temperature is not None:
        kwargs["temp"] = params.temperature
    if params.top_p is not None:
        kwargs["top_p"] = params.top_p
    kwargs.update(opts.penalties)
    if opts.grammar is not None:
        kwargs["grammar"] = opts.grammar
    # llama.cpp takes a 32-bit seed: any client integer maps onto one; unseeded, a fresh one per request
    llm.set_seed(params.seed & 0xFFFFFFFF if params.seed is not None else random.randint(0, 2**32 - 1))
    return kwargs


def run(llm, prompt_tokens: list[int], stop: list[str], params, opts: Options,
        emit: Callable[[Delta], None], cancelled: Callable[[], bool]) -> tuple[str, int] | None:
    """Generate, emitting Deltas (text, logprobs); returns (finish_reason, completion tokens), or None
    when cancelled."""
    from llama_cpp import llama_vocab_is_eog

    logits = Logits(opts) if opts.logprobs is not None or opts.bias else None
    kwargs = sampling(llm, params, opts)
    if logits is not None:
        kwargs["logits_processor"] = [logits]
    room = min(params.max_tokens, llm.n_ctx() - len(prompt_tokens))
    text, count, finish = Text(stop), 0, "length"
    for token in llm.generate(prompt_tokens, **kwargs):
        if cancelled():
            return None
        if llama_vocab_is_eog(llm._model.vocab, token):
            finish = "stop"
            break
        count += 1
        piece = llm.detokenize([token])
        logprob = entry(llm, logits.last, token, piece, opts.logprobs) if opts.logprobs is not None else None
        text.add(piece, logprob)
        _emit(emit, *text.release())
        if text.stopped:
            finish = "stop"
            break
        if count >= room:
            break
    _emit(emit, *text.release(final=True))
    return finish, count


def _emit(emit: Callable[[Delta], None], out: str, entries: list[dict]) -> None:
    if out or entries:
        emit(Delta(out, logprobs=entries or None))
