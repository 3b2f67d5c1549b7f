"""Move a model to a new tokenizer with no training of the model: ZeTT's hypernetwork, FVT or
lexical initialisation; `zoo transfer`.

    zoo.zett.transfer("runs/mbart_demo/translation", "de.model", "runs/mbart_de",
                      method="hypernet", hypernet_dir="runs/zett_hn")

    zoo.zett.transfer("runs/lm_demo", "de/tokenizer.json", "runs/lm_de",
                      method="hypernet", hypernet_dir="runs/zett_lm_hn")    # a zoo.lm model

The new embedding rows come from the new tokens' decompositions into the model's original
tokens (`zoo.zett.vocab` for mBART's sentencepiece tokenizers, `zoo.zett.bytelevel` for an
LM's tokenizer.json, both seen at byte level); special tokens always keep their source rows;
an untied LM also gets new LM-head rows. The result is a zoo model dir with the new
tokenizer, which `zoo translate` / `zoo generate` and `train.init_from` read.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import numpy as np

from zoo.io import modeldir
from zoo.lm.model import LMConfig
from zoo.lm.task import CausalLMTask
from zoo.mbart.tasks import TranslationTask, translation_config
from zoo.mbart.tokenizer import MBartTokenizer
from zoo.zett import vocab
from zoo.zett.bytelevel import ByteDecomposer, TokenVocab
from zoo.zett.hypernet import (
    Hypernet,
    HypernetConfig,
    fvt_embeddings,
    lexical_embeddings,
    predict_embeddings,
)
from zoo.zett.lm_task import LMTokenizerTransferTask, base_lm, lm_hypernet_config
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


# --------------------------------------------------------------------------- decoder-only LMs


def is_lm(checkpoint: str) -> bool:
    """Whether `checkpoint` holds a zoo.lm model (model dir of family lm, or causal_lm run)."""
    if modeldir.is_model_dir(checkpoint):
        return modeldir.read_meta(checkpoint)["family"] == "lm"
    path = Path(checkpoint) / "config.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("task", {}).get("name") == CausalLMTask.name
    except (ValueError, AttributeError):
        return False


def lm_transfer_embeddings(
    method: str,
    source: TokenVocab,
    target: TokenVocab,
    embedding: np.ndarray,
    output: np.ndarray | None,
    *,
    hypernet=None,
    chunk: int = 16384,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(input embedding [V_target, D], output rows [V_target, D] or None for a tied model)
    for `target`, by "hypernet" (hypernet=(module, params)), "fvt" or "lexical"; special
    tokens take the source rows of the same role exactly."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; use one of {METHODS}")
    max_len = hypernet[0].config.max_len if method == "hypernet" and hypernet else 7
    decomposer = ByteDecomposer(source, max_len)
    special = decomposer.special_source(target)
    tables = [np.asarray(embedding, np.float32)]
    if output is not None:
        tables.append(np.asarray(output, np.float32))
    unk = source.roles.get("unk", decomposer.pad_id)
    if method == "lexical":
        index = {b: i for i, b in enumerate(source.token_bytes) if b}
        exact = np.asarray([index.get(b, -1) if b else -1 for b in target.token_bytes], np.int64)
        new = [lexical_embeddings(t, exact, unk_id=unk) for t in tables]
    elif method == "fvt":
        decs = decomposer.decompositions(target)
        new = [fvt_embeddings(t, decs, unk_id=unk) for t in tables]
    else:
        if hypernet is None:
            raise ValueError("method='hypernet' needs the hypernetwork (--hypernet HN_DIR)")
        model, params = hypernet
        forms = decomposer.surface_matrix(target)
        out = predict_embeddings(model, params, forms.ids, *tables, chunk=chunk)
        new = [out["in"]] + ([out["out"]] if output is not None else [])
    keep = special >= 0
    new = [
        np.where(keep[:, None], t[np.maximum(special, 0)], n.astype(np.float32))
        for n, t in zip(new, tables)
    ]
    return new[0], (new[1] if output is not None else None)


def load_lm_hypernet(hn_dir: str, source: TokenVocab, config: LMConfig):
    """(Hypernet, params) from a `zoo train` workdir of the lm_tokenizer_transfer task."""
    c = modeldir.read_run_config(hn_dir, [LMTokenizerTransferTask.name], "--hypernet")
    hn_config = lm_hypernet_config(c.model.to_dict(), config, ByteDecomposer(source).pad_id)
    params = modeldir.load_params(hn_dir)["hypernet"]
    return Hypernet(hn_config), params


def transfer_lm(
    checkpoint: str,
    tokenizer: str,
    out: str,
    *,
    method: str = "hypernet",
    hypernet_dir: str | None = None,
) -> str:
    """A zoo.lm model dir at `out` that uses `tokenizer` (a tokenizer.json), with embeddings
    (and untied LM-head rows) from `method`. `checkpoint`: an lm model dir or a causal_lm
    workdir. Returns `out`."""
    config, source_path = base_lm(checkpoint)
    with open(tokenizer, "rb") as f:
        is_json = f.read(256).lstrip()[:1] == b"{"
    if not is_json:
        raise ValueError(
            f"--tokenizer {tokenizer}: an LM's new tokenizer must be a tokenizer.json "
            "(`zoo generate` reads it with the tokenizers library)"
        )
    source, target = TokenVocab.from_file(source_path), TokenVocab.from_file(tokenizer)
    params = jax.device_get(modeldir.load_params(checkpoint))
    embedding = np.asarray(params["embed_tokens"]["embedding"])
    output = None if config.tie_word_embeddings else np.asarray(params["lm_head"]["kernel"]).T
    hn = None
    if method == "hypernet":
        if not hypernet_dir:
            raise ValueError(
                "--method hypernet needs --hypernet HN_DIR (an lm_tokenizer_transfer workdir)"
            )
        hn = load_lm_hypernet(hypernet_dir, source, config)
    new_e, new_o = lm_transfer_embeddings(method, source, target, embedding, output, hypernet=hn)
    params = dict(params)
    params["embed_tokens"] = {"embedding": new_e}
    if new_o is not None:
        params["lm_head"] = {"kernel": np.ascontiguousarray(new_o.T)}
    roles = target.roles
    new_config = dataclasses.replace(
        config,
        vocab_size=target.vocab_size,
        bos_token_id=roles.get("bos"),
        eos_token_id=roles.get("eos"),
        pad_token_id=roles.get("pad"),
    )
    modeldir.save(
        out,
        family="lm",
        config=new_config.to_dict(),
        params=params,
        tokenizer={
            "file": "tokenizer.json",
            "transferred_from": os.path.abspath(checkpoint),
            "method": method,
        },
        files={"tokenizer.json": tokenizer},
    )
    return out


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
    out = (transfer_lm if is_lm(args.checkpoint) else transfer)(
        args.checkpoint,
        args.tokenizer,
        args.out,
        method=args.method,
        hypernet_dir=args.hypernet,
    )
    print(
        f"zoo: wrote {out} ({args.method} embeddings for {args.tokenizer}); use it with "
        f"`zoo {'generate' if is_lm(args.checkpoint) else 'translate'} --checkpoint {out}` "
        f"or --config.train.init_from={out}"
    )
    return 0
