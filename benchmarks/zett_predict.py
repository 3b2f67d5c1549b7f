"""Time to predict embeddings for a new 32k- and 250k-token vocabulary (ZeTT hypernetwork).

Two parts, timed separately: decomposing every new token into the source tokenizer's
pieces (Python + sentencepiece, zoo.zett.vocab) and the hypernetwork's forward
pass over the [V, 7] decompositions (jit, chunks of 16384 rows as ZeTT's transfer script).
The vocabularies are UnigramLM tokenizers sampled from substring counts of the gettext
English/German text of this machine; the source is the demo mBART's tokenizer.

  python benchmarks/zett_predict.py --base runs/mbart_demo/translation [--width 1024]

--width sets the base model's embedding width the hypernetwork reads (hidden = width, 3
layers): 128 is the demo model, 1024 mBART-large (random weights: timing only).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="runs/mbart_demo/translation")
    ap.add_argument("--data-dir", default="runs/mbart_demo/tfds")
    ap.add_argument("--sizes", default="32000,250000")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=16384)
    args = ap.parse_args(argv)

    import jax
    import numpy as np
    from flax import linen as nn

    from zoo.data import gettext
    from zoo.mbart.tasks import translation_config
    from zoo.tasks import get_task
    from zoo.zett import hypernet as zett
    from zoo.zett import vocab as vocab_transfer

    src = get_task(translation_config(args.base, "en_XX", "de_DE")).tokenizer()
    builder = gettext.gettext_builder(args.data_dir, src_lang="en", tgt_lang="de")
    texts = [ex[k].decode() for ex in builder.as_data_source()["train"] for k in ("en", "de")]
    counter = vocab_transfer.SubstringCounts()
    counter.add(texts)
    print(
        f"{len(texts)} sentences, {len(counter.counts)} distinct substrings; jax {jax.__version__}"
    )
    config = zett.HypernetConfig(source_vocab_size=src.vocab_size, embed_dim=args.width)
    model = zett.Hypernet(config)
    E = np.random.default_rng(0).normal(0, 0.02, (src.vocab_size, args.width)).astype(np.float32)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), np.full((2, 7), 4, np.int32), E)["params"])
    fn = jax.jit(lambda p, s: model.apply({"params": p}, s, E)["in"])
    for size in (int(x) for x in args.sizes.split(",")):
        proto = vocab_transfer.sample_unigram_model(
            counter.counts, size, np.random.default_rng(0), noise_std=0.0, template=src
        )
        from zoo.mbart.tokenizer import MBartTokenizer

        tgt = MBartTokenizer(None, model_proto=proto, languages=src.languages)
        t0 = time.perf_counter()
        forms = vocab_transfer.Decomposer(src).surface_matrix(tgt)
        t_dec = time.perf_counter() - t0
        n = forms.ids.shape[0]
        pad = -n % args.chunk
        ids = np.concatenate([forms.ids, np.repeat(forms.ids[-1:], pad, 0)])
        jax.block_until_ready(fn(params, ids[: args.chunk]))  # compile once
        t0 = time.perf_counter()
        for lo in range(0, len(ids), args.chunk):
            out = fn(params, ids[lo : lo + args.chunk])
        jax.block_until_ready(out)
        t_hn = time.perf_counter() - t0
        print(
            f"V={n:>7}: decompose {t_dec:6.1f} s, hypernet (width {args.width}) {t_hn:6.1f} s, "
            f"total {t_dec + t_hn:6.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
