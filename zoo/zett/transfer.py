"""Move a model to a new tokenizer with no training of the model: ZeTT's hypernetwork, FVT or
lexical initialisation; `zoo transfer`.

    zoo.zett.transfer("runs/mbart_demo/translation", "de.model", "runs/mbart_de",
                      method="hypernet", hypernet_dir="runs/zett_hn")

The new embedding rows come from the new tokens' decompositions into the model's original
tokens (`zoo.zett.vocab`); special tokens always keep their source rows. The result is a zoo
model dir with the new tokenizer, which `zoo translate` and `train.init_from` read.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from zoo.io import modeldir
from zoo.mbart.tasks import TranslationTask, translation_config
from zoo.mbart.tokenizer import MBartTokenizer
from zoo.zett import vocab
from zoo.zett.hypernet import (
    Hypernet,
    HypernetConfig,
    fvt_embeddings,
    lexical_embeddings,
    predict_embeddings,
)
from zoo.zett.task import TokenizerTransferTask

METHODS = ("hypernet", "fvt", "lexical")


def load_hypernet(hn_dir: str, source_embedding: np.ndarray, predict_bias: bool):
    """(Hypernet module, its params) from a `zoo train` workdir of the tokenizer_transfer task."""
    c = modeldir.read_run_config(hn_dir, [TokenizerTransferTask.name], "--hypernet")
    fields = dict(c.model.to_dict())
    fields.update(
        source_vocab_size=source_embedding.shape[0],
        embed_dim=source_embedding.shape[1],
        predict_bias=fields.get("predict_bias", predict_bias),
    )
    config = HypernetConfig.from_dict(fields)
    params = modeldir.load_params(hn_dir)["hypernet"]
    return Hypernet(config), params


def transfer_embeddings(
    method: str,
    source_tok,
    target_tok,
    embedding: np.ndarray,
    bias: np.ndarray | None,
    *,
    hypernet=None,
    chunk: int = 16384,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(embedding [V_target, D], output bias [V_target] or None) for target_tok.

    method: "hypernet" (hypernet=(module, params)), "fvt" or "lexical". Special tokens
    (<s>, <pad>, </s>, <unk>, language codes, <mask>) always take the source rows exactly.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}; use one of {METHODS}")
    embedding = np.asarray(embedding, np.float32)
    bias = None if bias is None else np.asarray(bias, np.float32)
    decomposer = vocab.Decomposer(source_tok)
    forms = decomposer.surface_matrix(target_tok)
    special = forms.special_source
    pieces = target_tok.pieces()
    unk = source_tok.unk_id

    def with_specials(new, src):
        return np.where(
            (special >= 0).reshape((-1,) + (1,) * (new.ndim - 1)), src[np.maximum(special, 0)], new
        )

    if method == "lexical":
        index = {p: i for i, p in enumerate(source_tok.pieces())}
        exact = np.asarray([index.get(p, -1) for p in pieces], np.int64)
        new_e = lexical_embeddings(embedding, exact, unk_id=unk)
        new_b = None if bias is None else lexical_embeddings(bias, exact, unk_id=unk)
    elif method == "fvt":
        decs = [[0] if special[v] >= 0 else decomposer.decompose(p) for v, p in enumerate(pieces)]
        new_e = fvt_embeddings(embedding, decs, unk_id=unk)
        new_b = None if bias is None else fvt_embeddings(bias, decs, unk_id=unk)
    else:
        if hypernet is None:
            raise ValueError("method='hypernet' needs the hypernetwork (--hypernet HN_DIR)")
        model, params = hypernet
        if model.config.max_len != forms.ids.shape[1]:
            forms = vocab.Decomposer(source_tok, max_len=model.config.max_len).surface_matrix(
                target_tok
            )
        out = predict_embeddings(model, params, forms.ids, embedding, chunk=chunk)
        new_e, new_b = out["in"], out["bias"] if bias is not None else None
        if bias is not None and new_b is None:
            new_b = fvt_embeddings(
                bias,
                [[0] if special[v] >= 0 else decomposer.decompose(p) for v, p in enumerate(pieces)],
                unk_id=unk,
            )
    new_e = with_specials(new_e.astype(np.float32), embedding)
    if new_b is not None:
        new_b = with_specials(new_b.astype(np.float32), bias)
    return new_e, new_b


def transfer(
    checkpoint: str,
    tokenizer: str,
    out: str,
    *,
    method: str = "hypernet",
    hypernet_dir: str | None = None,
) -> str:
    """A zoo mBART model dir at `out` that uses `tokenizer` (a sentencepiece .model or a
    tokenizer.json), with embeddings from `method`: "hypernet" (a trained hypernetwork,
    `hypernet_dir` = its `zoo train` workdir), "fvt" or "lexical". `checkpoint`: a zoo mBART
    model dir or a `zoo train` workdir of an mBART task. Returns `out` (`zoo transfer`)."""
    c = translation_config(checkpoint, "en_XX", "en_XX")
    base_task = TranslationTask(c)
    source_tok = base_task.tokenizer()
    params = jax.device_get(modeldir.load_params(checkpoint))
    proto = vocab.load_target_model_proto(tokenizer)

    target_tok = MBartTokenizer(
        None, model_proto=proto, languages=source_tok.languages, style=source_tok.style
    )
    embedding = np.asarray(params["shared"]["embedding"])
    bias = params.get("final_logits_bias")
    hn = None
    if method == "hypernet":
        if not hypernet_dir:
            raise ValueError(
                "--method hypernet needs --hypernet HN_DIR (a tokenizer_transfer workdir)"
            )
        hn = load_hypernet(hypernet_dir, embedding, bias is not None)
    new_e, new_b = transfer_embeddings(method, source_tok, target_tok, embedding, bias, hypernet=hn)
    params = dict(params)
    params["shared"] = {**params["shared"], "embedding": new_e}
    if new_b is not None:
        params["final_logits_bias"] = new_b
    config = dataclasses.replace(base_task.model_config, vocab_size=target_tok.vocab_size)
    if os.path.exists(os.path.join(out, "model.json")):
        raise FileExistsError(f"{out} already holds a model; choose another --out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "sentencepiece.bpe.model"), "wb") as f:
        f.write(proto)
    modeldir.save(
        out,
        family="mbart",
        config=config.to_dict(),
        params=params,
        tokenizer={
            "style": source_tok.style,
            "spm": "sentencepiece.bpe.model",
            "transferred_from": os.path.abspath(checkpoint),
            "method": method,
        },
    )
    return out


def main(args) -> int:
    """`zoo transfer --checkpoint DIR --tokenizer FILE --out DIR --method M [--hypernet DIR]`."""
    for flag, path in (("--checkpoint", args.checkpoint), ("--tokenizer", args.tokenizer)):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{flag} {path} does not exist")
    out = transfer(
        args.checkpoint,
        args.tokenizer,
        args.out,
        method=args.method,
        hypernet_dir=args.hypernet,
    )
    print(
        f"zoo: wrote {out} ({args.method} embeddings for {args.tokenizer}); use it with "
        f"`zoo translate --checkpoint {out}` or --config.train.init_from={out}"
    )
    return 0
