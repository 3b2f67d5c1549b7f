"""The mBART family: multilingual seq2seq with CSR, from data to `zoo translate`.

Python face:

    model, params = zoo.mbart.load(SRC)   # transformers dir, fairseq file, zoo dir or workdir
    logits = model.apply({"params": params}, input_ids, attention_mask, decoder_input_ids)
    tok = zoo.mbart.MBartTokenizer("sentencepiece.bpe.model")
    from zoo.mbart.translate import translate
    translate(model, params, tok, ["Hello"], src_lang="en_XX", tgt_lang="de_DE")

Files (data flows files -> data -> task -> loop; checkpoint -> model -> translate):
- `model`: `MBart` / `MBartConfig` (the core's `zoo.nn.encoder_decoder` configured as mBART)
  and the pure incremental-decoding functions.
- `tokenizer`: sentencepiece with fairseq's id layout (cc25 / mBART-50); `zoo spm`.
- `gettext`, `corpus`: parallel text (the gettext catalogs of any Linux machine, TFDS).
- `noising`, `lexicon`: mBART's denoising noise and CSR's code switching with its dictionary.
- `tasks`: translation, csr, denoising (what the loop trains).
- `translate`: beam / diverse beam generation and `zoo translate`.
- `convert`: transformers / fairseq checkpoints in, transformers out; `zoo convert mbart`.
- `metrics`: BLEU / chrF and held-out nats per character.
"""

from zoo.mbart.convert import load, load_mbart, save_mbart_hf
from zoo.mbart.metrics import corpus_scores
from zoo.mbart.model import MBart, MBartConfig
from zoo.mbart.tokenizer import MBartTokenizer
from zoo.mbart.translate import TranslateOptions

__all__ = [
    "MBart",
    "MBartConfig",
    "MBartTokenizer",
    "TranslateOptions",
    "corpus_scores",
    "load",
    "load_mbart",
    "save_mbart_hf",
]
