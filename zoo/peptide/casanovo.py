"""Casanovo 5 checkpoints -> the AR-only `zoo.peptide.model` model, and the zoo model directory.

    config, params, meta = load_casanovo("casanovo_v5.ckpt")   # Lightning .ckpt, no torch
    save_zoo_checkpoint("out_dir", config, params, meta.residues)
    convert("casanovo_v5.ckpt", "out_dir")                      # both; `zoo convert casanovo`
    config, params, residues = load_model_dir("out_dir")
    hybrid_params = warm_start_hybrid(hybrid_params, params)    # encoder + AR decoder copied

What a Casanovo 5.x checkpoint is (casanovo 5.2.1 `Spec2Pep`, depthcharge-ms 0.4): a
Lightning checkpoint (torch zip pickle) whose `hyper_parameters` hold `dim_model`, `n_head`,
`n_layers`, `max_charge`, `max_peptide_len`, ... and `tokenizer`, a depthcharge
`PeptideTokenizer` (read here as a stand-in: its `residues` masses, `reverse_index` token order,
`stop_int`, `reverse`), and whose `state_dict` holds `encoder.*` / `decoder.*` weights, the
FloatEncoder wavelength buffers (`*.sin_term`, `*.cos_term`) included.

Mapping (`_entries`): torch Linear weights [out, in] become kernels [in, out]; packed attention
`in_proj_weight` [3d, d] splits in q, k, v order into kernels [d, heads, head_dim] (biases
[heads, head_dim]); `out_proj.weight` becomes [heads, head_dim, d]; LayerNorm `weight` is our
`scale`; `sin_term` and `cos_term` concatenate into our `terms`; the latent spectrum [1, 1, d]
becomes [d]. Token classes are permuted from Casanovo's tokenizer index (0 pad, then the
sorted token strings, `$` among them) to ours (0 pad, 1..n `Residues.tokens`, n+1 stop): rows
of `decoder.token_encoder.weight` and of `decoder.final.{weight,bias}`.

Residue names: Casanovo 5 writes ProForma (`C[Carbamidomethyl]`, `[Acetyl]-`); ours are
Casanovo's mass notation (`C+57.021`, `+42.011`), via `zoo.peptide.residues.PROFORMA_ALIASES`.
A ProForma token without an alias gets a mass-notation name from its mass (`K[Foo]` with
K + 14.016 -> `K+14.016`, `[Foo]-` -> `+14.016`) and an alias from its ProForma name. The
residue table keeps Casanovo's masses (its default vocabulary has plain `C`, and drops `I`
when `replace_isoleucine_with_leucine`), ordered as `zoo.peptide.residues.CASANOVO_MASSES`, then
any others in Casanovo's order.
"""

from __future__ import annotations

import dataclasses
import os
import types
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from flax.linen import meta

from zoo.io import modeldir, torch_pickle
from zoo.io.safe_pickle import short_repr
from zoo.peptide import residues as zres
from zoo.peptide.model import PeptideConfig, PeptideModel, TokenLayout

FAMILY = "peptide"


@dataclasses.dataclass(frozen=True)
class CasanovoMeta:
    """What a Casanovo checkpoint says besides the weights.

    residues: the vocabulary, in our token order (class ids: `TokenLayout`).
    casanovo_index: [n + 2] int, Casanovo's class for each of our classes (0 pad, residues,
      stop): `our_logits = casanovo_logits[..., casanovo_index]`.
    casanovo_tokens: Casanovo's token per class (its tokenizer `reverse_index`; None = pad).
    hparams: the checkpoint's plain hyper-parameters (the tokenizer object left out).
    """

    residues: zres.Residues
    casanovo_index: np.ndarray
    casanovo_tokens: tuple
    hparams: dict


class CasanovoFormatError(ValueError):
    """The file is not a Casanovo 5 checkpoint this importer understands."""


# ----------------------------------------------------------------------------- parameters
# kind: "t" Linear weight -> kernel; "same"; "qkv:<i>" slice i of a packed in_proj, as kernel;
# "qkvb:<i>" slice i of a packed in_proj bias; "out" out_proj weight; "terms" sin+cos buffers;
# "latent" [1, 1, d] -> [d].


def _entries(c: PeptideConfig) -> list[tuple[str, str, str]]:
    """(our '/'-joined param path, Casanovo state_dict key, kind), all but the token rows."""
    out: list[tuple[str, str, str]] = []

    def attention(ours: str, theirs: str) -> None:
        for i, name in enumerate(("query", "key", "value")):
            out.append((f"{ours}/{name}/kernel", f"{theirs}.in_proj_weight", f"qkv:{i}"))
            out.append((f"{ours}/{name}/bias", f"{theirs}.in_proj_bias", f"qkvb:{i}"))
        out.append((f"{ours}/out/kernel", f"{theirs}.out_proj.weight", "out"))
        out.append((f"{ours}/out/bias", f"{theirs}.out_proj.bias", "same"))

    def norm(ours: str, theirs: str) -> None:
        out.append((f"{ours}/scale", f"{theirs}.weight", "same"))
        out.append((f"{ours}/bias", f"{theirs}.bias", "same"))

    def ffn(ours: str, theirs: str) -> None:
        for fc, linear in (("fc1", "linear1"), ("fc2", "linear2")):
            out.append((f"{ours}/ffn/{fc}/kernel", f"{theirs}.{linear}.weight", "t"))
            out.append((f"{ours}/ffn/{fc}/bias", f"{theirs}.{linear}.bias", "same"))

    out.append(("encoder_latent_spectrum", "encoder.latent_spectrum", "latent"))
    for part in ("mz_encoder", "int_encoder"):
        out.append((f"encoder_peak_encoder/{part}/terms", f"encoder.peak_encoder.{part}", "terms"))
    out.append(
        ("encoder_peak_encoder/combiner/kernel", "encoder.peak_encoder.combiner.weight", "t")
    )
    for i in range(c.encoder_layers):
        ours, theirs = f"encoder_layer_{i}", f"encoder.transformer_encoder.layers.{i}"
        attention(f"{ours}/self_attn", f"{theirs}.self_attn")
        ffn(ours, theirs)
        norm(f"{ours}/norm1", f"{theirs}.norm1")
        norm(f"{ours}/norm2", f"{theirs}.norm2")
    out.append(("ar_positions/terms", "decoder.positional_encoder", "terms"))
    out.append(("ar_precursor/mass_encoder/terms", "decoder.mass_encoder", "terms"))
    out.append(("ar_precursor/charge_embedding", "decoder.charge_encoder.weight", "same"))
    for i in range(c.ar_layers):
        ours, theirs = f"ar_layer_{i}", f"decoder.transformer_decoder.layers.{i}"
        attention(f"{ours}/self_attn", f"{theirs}.self_attn")
        attention(f"{ours}/cross_attn", f"{theirs}.multihead_attn")
        ffn(ours, theirs)
        for j in (1, 2, 3):
            norm(f"{ours}/norm{j}", f"{theirs}.norm{j}")
    return out


_TOKEN_KEYS = ("decoder.token_encoder.weight", "decoder.final.weight", "decoder.final.bias")


def param_shapes(config: PeptideConfig) -> dict[str, tuple[int, ...]]:
    """Our parameter shapes by '/'-joined path (abstract evaluation: nothing is allocated)."""
    model = PeptideModel(config)
    f = jnp.zeros((1, 1), jnp.float32)
    b = jnp.zeros((1,), jnp.float32)
    tokens = jnp.zeros((1, 1), jnp.int32)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), f, f, b, b, tokens))["params"]
    flat = traverse_util.flatten_dict(meta.unbox(boxed), sep="/")
    return {k: tuple(v.shape) for k, v in flat.items()}


def _get(state: dict, key: str, path: str) -> np.ndarray:
    if key not in state:
        raise CasanovoFormatError(
            f"{path}: state_dict has no {key!r}; not a Casanovo 5 (depthcharge 0.4) checkpoint "
            f"of the expected size (keys start with: {sorted(state)[:4]})"
        )
    value = state[key]
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        raise CasanovoFormatError(
            f"{path}: state_dict[{key!r}] is {type(value).__name__}, not a numeric tensor"
        )
    return np.asarray(value, np.float32)


def _convert(kind: str, state: dict, key: str, c: PeptideConfig, path: str) -> np.ndarray:
    d, h, k = c.d_model, c.n_heads, c.head_dim
    if kind == "terms":
        sin, cos = _get(state, f"{key}.sin_term", path), _get(state, f"{key}.cos_term", path)
        return np.concatenate([sin, cos])
    a = _get(state, key, path)
    if kind == "same":
        return a
    if kind == "t":
        return np.ascontiguousarray(a.T)
    if kind == "latent":
        return a.reshape(-1)
    if kind == "out":
        return np.ascontiguousarray(a.T.reshape(h, k, d))
    part, i = kind.split(":")
    piece = np.split(a, 3, axis=0)[int(i)]
    if part == "qkv":
        return np.ascontiguousarray(piece.T.reshape(d, h, k))
    return piece.reshape(h, k)  # qkvb


# ----------------------------------------------------------------------------- residues


def _our_name(token: str, masses: dict[str, float]) -> str:
    """Casanovo 5 token (ProForma) -> our mass-notation name."""
    if token in zres.PROFORMA_ALIASES:
        return zres.PROFORMA_ALIASES[token]
    if token in zres.CASANOVO_MASSES or (len(token) == 1 and token.isupper()):
        return token
    mass = masses[token]
    if token.endswith("-"):  # N-terminal modification: its mass is the delta
        return f"{mass:+.3f}"
    base = token[0]
    if base.isupper() and base in masses and token[1:2] == "[":
        return f"{base}{mass - masses[base]:+.3f}"
    return token  # already mass notation (Casanovo <= 4 style) or something we keep as is


def _residues_from_tokenizer(tokenizer: Any, path: str) -> tuple[zres.Residues, dict[str, str]]:
    """(our Residues, {our name: Casanovo name})."""
    masses = getattr(tokenizer, "residues", None)
    if isinstance(masses, dict) and not all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
        for k, v in masses.items()
    ):
        raise CasanovoFormatError(
            f"{path}: hyper_parameters['tokenizer'] residues are not token -> mass numbers"
        )
    if not isinstance(masses, dict) or not masses:
        raise CasanovoFormatError(
            f"{path}: hyper_parameters['tokenizer'] has no residue masses; not a Casanovo 5 "
            "checkpoint (Casanovo <= 4 checkpoints, depthcharge 0.2, are not supported)"
        )
    ours_to_theirs: dict[str, str] = {}
    for token in masses:
        name = _our_name(token, masses)
        if name in ours_to_theirs:
            raise CasanovoFormatError(
                f"{path}: Casanovo tokens {ours_to_theirs[name]!r} and {token!r} both map to "
                f"{name!r}; rename one in the checkpoint's residues"
            )
        ours_to_theirs[name] = token
    known = [t for t in zres.CASANOVO_MASSES if t in ours_to_theirs]
    order = known + [t for t in ours_to_theirs if t not in zres.CASANOVO_MASSES]
    aliases = dict(zres.PROFORMA_ALIASES)
    for name, token in ours_to_theirs.items():
        if token != name:
            aliases.setdefault(token, name)
    table = {t: float(masses[ours_to_theirs[t]]) for t in order}
    replace = bool(getattr(tokenizer, "replace_isoleucine_with_leucine", False))
    return zres.Residues(masses=table, aliases=aliases, replace_isoleucine=replace), ours_to_theirs


# Casanovo 5's default vocabulary: config.yaml's `residues` (ProForma names) plus depthcharge's
# plain C, with I replaced by L (`replace_isoleucine_with_leucine: true`).
_CASANOVO5_NAMES = {
    "C+57.021": "C[Carbamidomethyl]",
    "M+15.995": "M[Oxidation]",
    "N+0.984": "N[Deamidated]",
    "Q+0.984": "Q[Deamidated]",
    "+42.011": "[Acetyl]-",
    "+43.006": "[Carbamyl]-",
    "-17.027": "[Ammonia-loss]-",
    "+43.006-17.027": "[+25.980265]-",
}


def casanovo5_default_tokenizer() -> types.SimpleNamespace:
    """What `casanovo sequence` builds from its default config: the fields of depthcharge's
    `PeptideTokenizer` this importer reads (residues, reverse_index, stop_int, reverse,
    replace_isoleucine_with_leucine). Its token order is Python's string sort plus `$`."""
    masses = {_CASANOVO5_NAMES.get(t, t): m for t, m in zres.CASANOVO_MASSES.items() if t != "I"}
    masses["C"] = 103.009184505  # depthcharge's canonical cysteine, kept by Casanovo 5
    reverse_index = [None, *sorted([*masses, "$"])]
    return types.SimpleNamespace(
        residues=masses,
        reverse_index=reverse_index,
        stop_int=reverse_index.index("$"),
        reverse=True,
        replace_isoleucine_with_leucine=True,
    )


def _class_index(residues: zres.Residues, ours_to_theirs, tokenizer, path: str) -> np.ndarray:
    reverse_index = list(getattr(tokenizer, "reverse_index", []) or [])
    stop = getattr(tokenizer, "stop_int", None)
    lookup = {t: i for i, t in enumerate(reverse_index) if t is not None}
    missing = [ours_to_theirs[t] for t in residues.tokens if ours_to_theirs[t] not in lookup]
    if not reverse_index or stop is None or missing:
        raise CasanovoFormatError(
            f"{path}: the tokenizer's reverse_index/stop_int do not cover its residues "
            f"(missing {missing[:5]}, stop_int={stop!r})"
        )
    layout = TokenLayout(residues.tokens)
    # Our pad class reads Casanovo's pad (0); our stop reads its stop_int.
    index = layout.per_class(lambda t: lookup[ours_to_theirs[t]], 0)
    index[layout.stop] = int(stop)
    return np.array(index, np.int64)


# ----------------------------------------------------------------------------- public API


def _hparams(ckpt: Any, path: str) -> dict:
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CasanovoFormatError(
            f"{path}: not a Lightning checkpoint (no 'state_dict'); pass a Casanovo .ckpt file"
        )
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict):
        raise CasanovoFormatError(f"{path}: no 'hyper_parameters'; not a Casanovo checkpoint")
    return hp


def load_casanovo(ckpt_path: str | os.PathLike) -> tuple[PeptideConfig, dict, CasanovoMeta]:
    """Reads a Casanovo 5 Lightning checkpoint -> (AR-only config, params (NumPy), meta).

    The params plug into `PeptideModel(config)`; encoder outputs and decoder logits equal
    Casanovo's on the same float32 inputs (Casanovo's class order permuted to ours).
    """
    path = str(ckpt_path)
    ckpt = torch_pickle.load(path)
    try:
        return from_checkpoint(ckpt, path)
    except (TypeError, AttributeError, IndexError, KeyError, OverflowError) as e:
        # A checkpoint from a stranger can hold any structure; never a traceback for it.
        raise CasanovoFormatError(
            f"{path}: not a Casanovo 5 checkpoint this importer understands "
            f"({type(e).__name__}: {' '.join(str(e).split())[:200]})"
        ) from None


def _hparam(hp: dict, key: str, default: Any, path: str) -> Any:
    """hyper_parameters[key]: an int (or, for a float default, a number) as the file says."""
    value = hp.get(key, default)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(default):
        raise CasanovoFormatError(
            f"{path}: hyper_parameters {key}={short_repr(value)} is a {type(value).__name__}, "
            f"not a {type(default).__name__}"
        )
    return value


def from_checkpoint(ckpt: Any, path: str) -> tuple[PeptideConfig, dict, CasanovoMeta]:
    """`load_casanovo` on an already unpickled checkpoint (`path` names it in errors).

    A checkpoint without `hyper_parameters['tokenizer']` gets Casanovo 5's default
    vocabulary (what `casanovo sequence` would use with its default config), with a warning.
    """
    hp = _hparams(ckpt, path)
    state = ckpt["state_dict"]
    if any(k.startswith("decoder.aa_encoder") for k in state):
        raise CasanovoFormatError(
            f"{path}: a Casanovo <= 4 checkpoint (depthcharge 0.2 layout, 'decoder.aa_encoder'); "
            "only Casanovo 5.x checkpoints are supported"
        )
    if "decoder.token_encoder.weight" not in state:
        raise CasanovoFormatError(
            f"{path}: state_dict has no 'decoder.token_encoder.weight' (keys start with: "
            f"{sorted(state)[:4]}); not a Casanovo 5.x Spec2Pep checkpoint"
        )
    tokenizer = hp.get("tokenizer")
    if tokenizer is None:
        warnings.warn(
            f"{path}: no tokenizer in hyper_parameters; using Casanovo 5's default vocabulary",
            stacklevel=2,
        )
        tokenizer = casanovo5_default_tokenizer()
    residues, ours_to_theirs = _residues_from_tokenizer(tokenizer, path)
    index = _class_index(residues, ours_to_theirs, tokenizer, path)

    def count(prefix: str) -> int:
        return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})

    emb = _get(state, "decoder.token_encoder.weight", path)
    ff = _get(state, "encoder.transformer_encoder.layers.0.linear1.weight", path)
    if emb.shape[0] != len(index):
        raise CasanovoFormatError(
            f"{path}: decoder.token_encoder has {emb.shape[0]} rows but the tokenizer has "
            f"{len(index)} classes (pad, {len(index) - 2} residues, stop)"
        )
    config = PeptideConfig(
        mode="ar",
        n_residues=len(residues.tokens),
        d_model=int(emb.shape[1]),
        n_heads=_hparam(hp, "n_head", 8, path),
        d_ff=int(ff.shape[0]),
        encoder_layers=count("encoder.transformer_encoder.layers."),
        ar_layers=count("decoder.transformer_decoder.layers."),
        nar_layers=0,
        dropout=_hparam(hp, "dropout", 0.0, path),
        max_charge=int(_get(state, "decoder.charge_encoder.weight", path).shape[0]),
        max_peptide_len=_hparam(hp, "max_peptide_len", 100, path),
        reverse=bool(getattr(tokenizer, "reverse", True)),
    )
    try:
        config.validate()  # ranges a real model has, before anything is allocated for it
    except ValueError as e:
        raise CasanovoFormatError(f"{path}: hyper-parameters out of range: {e}") from None
    flat: dict[str, np.ndarray] = {}
    used = set(_TOKEN_KEYS)
    for ours, theirs, kind in _entries(config):
        flat[ours] = _convert(kind, state, theirs, config, path)
        used |= {f"{theirs}.sin_term", f"{theirs}.cos_term"} if kind == "terms" else {theirs}
    final_w = _get(state, "decoder.final.weight", path)
    flat["ar_aa_embedding/embedding"] = np.ascontiguousarray(emb[index])
    flat["ar_output/kernel"] = np.ascontiguousarray(final_w[index].T)
    flat["ar_output/bias"] = _get(state, "decoder.final.bias", path)[index]
    unused = sorted(set(state) - used)
    if unused:
        raise CasanovoFormatError(
            f"{path}: state_dict entries this importer does not map: {unused[:8]}; the "
            "checkpoint is not the Casanovo 5.x Spec2Pep architecture"
        )
    want = param_shapes(config)
    for key in sorted(set(want) | set(flat)):
        have = flat[key].shape if key in flat else None
        if have != want.get(key):
            raise CasanovoFormatError(
                f"{path}: {key} converts to shape {have} but the model needs {want.get(key)} "
                f"(config {config})"
            )
    plain = {k: v for k, v in hp.items() if isinstance(v, (bool, int, float, str, type(None)))}
    info = CasanovoMeta(
        residues=residues,
        casanovo_index=index,
        casanovo_tokens=tuple(tokenizer.reverse_index),
        hparams=plain,
    )
    return config, traverse_util.unflatten_dict(flat, sep="/"), info


def residues_to_json(residues: zres.Residues) -> dict:
    """The residue vocabulary as model.json's "tokenizer" entry (token order preserved)."""
    return {
        "kind": "residues",
        "residues": [[t, float(m)] for t, m in residues.masses.items()],
        "aliases": dict(residues.aliases),
        "replace_isoleucine": bool(residues.replace_isoleucine),
    }


def residues_from_json(entry: dict) -> zres.Residues:
    return zres.Residues(
        masses={t: float(m) for t, m in entry["residues"]},
        aliases=dict(entry.get("aliases", zres.PROFORMA_ALIASES)),
        replace_isoleucine=bool(entry.get("replace_isoleucine", False)),
    )


def save_zoo_checkpoint(
    out_dir: str | os.PathLike, config: PeptideConfig, params: Any, residues: zres.Residues
) -> None:
    """Writes a zoo model directory (model.json with family "peptide", params/ via orbax)."""
    if config.n_residues != len(residues.tokens):
        raise ValueError(
            f"config.n_residues={config.n_residues} but the residue table has "
            f"{len(residues.tokens)} tokens; they must agree"
        )
    modeldir.save(
        str(out_dir),
        family=FAMILY,
        config=dataclasses.asdict(config),
        params=meta.unbox(params),
        tokenizer=residues_to_json(residues),
    )


def load_model_dir(path: str | os.PathLike) -> tuple[PeptideConfig, Any, zres.Residues]:
    """A peptide model directory -> (config, params (NumPy), residues)."""
    info = modeldir.read_meta(str(path))
    if info.get("family") != FAMILY:
        raise ValueError(
            f"{path}: model.json says family {info.get('family')!r}, not {FAMILY!r}; pass a "
            "directory written by `zoo convert casanovo` or a peptide training run"
        )
    config = PeptideConfig(**info["config"])
    config.validate()
    params = modeldir.load_params(str(path))
    fix = "its model.json no longer describes its params/; convert the checkpoint again"
    modeldir.check_fits(params, param_shapes(config), str(path), fix)
    return config, params, residues_from_json(info["tokenizer"])


def convert(ckpt_path: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """`zoo convert casanovo CKPT OUT`: a Casanovo 5 .ckpt -> zoo model directory OUT."""
    config, params, info = load_casanovo(ckpt_path)
    save_zoo_checkpoint(out_dir, config, params, info.residues)


def main(args) -> int:
    """`zoo convert casanovo CKPT OUT`."""
    convert(args.src, args.out)
    print(f"zoo: wrote {args.out} (model.json, params/; family peptide, mode ar)")
    return 0


def warm_start_hybrid(hybrid_params: Any, casanovo_params: Any) -> Any:
    """Copies the encoder and AR decoder (every `encoder_*` and `ar_*` parameter of the
    Casanovo model) into a hybrid model's params; the NAR decoder (and the hybrid-only
    `ar_nar_slot_positions`) keep their values. Boxed (logically partitioned) targets stay
    boxed. Raises ValueError on a shape mismatch (e.g. a different n_residues or width).
    """
    source = traverse_util.flatten_dict(meta.unbox(casanovo_params), sep="/")
    target = traverse_util.flatten_dict(hybrid_params, sep="/")
    out = dict(target)
    for key, value in source.items():
        if not key.startswith(("encoder_", "ar_")):
            continue
        if key not in target:
            raise ValueError(
                f"warm start: the hybrid model has no parameter {key}; build it with the "
                "Casanovo model's encoder/AR sizes (d_model, n_heads, d_ff, layers)"
            )
        leaf = target[key]
        shape = tuple(meta.unbox(leaf).shape)
        if tuple(np.shape(value)) != shape:
            raise ValueError(
                f"warm start: {key} is {list(np.shape(value))} in the Casanovo model but "
                f"{list(shape)} in the hybrid one; match n_residues, d_model, d_ff and max_charge"
            )
        value = jnp.asarray(value, meta.unbox(leaf).dtype)
        out[key] = leaf.replace_boxed(value) if isinstance(leaf, meta.AxisMetadata) else value
    return traverse_util.unflatten_dict(out, sep="/")
