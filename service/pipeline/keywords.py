"""The LLM keyword extractor of Symbolic-MoE: which skills does a question need?

An expert is asked for 2-5 comma-separated keywords, sampled ``n`` times
(temperature 0.7); a keyword is kept when it appears in at least ``min_agree``
samples (lowercased, at most 20 characters), as in the paper.  It costs n
generations per question: use it for profiles and offline runs, or configure
it for live traffic (CONCLAVE_KEYWORD_EXPERT) knowing the price; the fast
path is nearest-skill matching on the request embedding.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter

from experts_registry.model import Expert

from ..backends import GenParams, collect

PROMPT = ("What subjects and skills does a question require? Answer with 2 to 5 short keywords, "
          "comma-separated, and nothing else.\n\n"
          "Question: What is 15% of 80?\nKeywords: arithmetic, percentages\n\n"
          "Question: {question}\nKeywords:")
MAX_LEN = 20


def parse_keywords(text: str) -> list[str]:
    """'Algebra, 2. Calculus; derivatives.' -> ['algebra', 'calculus', 'derivatives'] (<= 20 chars each)."""
    out: list[str] = []
    for part in re.split(r"[,;\n]", text.lower()):
        word = re.sub(r"^[\s\-*•\d.)]+|[\s.!:\"'*]+$", "", part).strip()
        word = re.sub(r"^keywords?:\s*", "", word)
        if word and len(word) <= MAX_LEN and word not in out:
            out.append(word)
    return out[:5]


def agreed(samples: list[list[str]], min_agree: int = 2) -> list[str]:
    """Keywords named in at least ``min_agree`` samples, most agreed first."""
    counts = Counter(word for sample in samples for word in set(sample))
    first_seen = {w: i for i, w in reversed(list(enumerate(w for s in samples for w in s)))}
    return sorted((w for w, c in counts.items() if c >= min_agree), key=lambda w: (-counts[w], first_seen[w]))


async def extract_keywords(call, expert: Expert, question: str, n: int = 5, temperature: float = 0.7,
                           min_agree: int = 2, max_tokens: int = 32, seed: int = 0) -> list[str]:
    """``call`` is the gateway's guarded expert call; returns the agreed keywords (maybe none)."""
    messages = [{"role": "user", "content": PROMPT.format(question=question)}]

    async def sample(i: int) -> list[str]:
        params = GenParams(max_tokens=max_tokens, temperature=temperature, seed=seed + i)
        return parse_keywords((await collect(call(expert, messages, params))).text)

    return agreed(list(await asyncio.gather(*(sample(i) for i in range(n)))), min_agree)
