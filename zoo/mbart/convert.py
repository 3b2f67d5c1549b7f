"""mBART checkpoints: import from transformers / fairseq files, export to transformers' layout.

    model, params = load("path/to/mbart-large-cc25")   # transformers, fairseq or a zoo dir
    model, params = load_mbart("path/to/mbart.cc25.v2")      # fairseq: directory with model.pt
    save_mbart_hf(model.config, params, "out_dir")           # config.json + model.safetensors
    convert("path/to/mbart-large-cc25", "checkpoints/cc25")  # `zoo convert mbart`: a zoo dir

Reads `model.safetensors` (or a sharded `model.safetensors.index.json`), `pytorch_model.bin`
(or its index) and fairseq's `model.pt` with numpy only (`zoo.io.torch_pickle` for the
torch formats); torch is never imported.

Key mapping (transformers -> ours, see `_entries`): `model.` prefix dropped and dots become
our module names; torch Linear weights [out, in] are transposed to kernels [in, out]; the
q/k/v kernels are reshaped to [d_model, heads, head_dim] and out_proj to [heads, head_dim,
d_model]; LayerNorm `weight` is our `scale`; `final_logits_bias` [1, V] becomes [V].
The tied embedding is read from whichever of `model.shared.weight`,
`model.{encoder,decoder}.embed_tokens.weight`, `lm_head.weight` the file holds (all present
copies must agree); a missing `final_logits_bias` reads as zeros (as transformers does).
fairseq keys are the same without `model.`; packed `in_proj_weight`/`in_proj_bias` [3d, d]
are split in q, k, v order, and `*.version`, `*._float_tensor` are dropped.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import sentencepiece
from flax import traverse_util
from flax.linen import meta
from safetensors.numpy import save_file

from zoo.io import modeldir, torch_pickle
from zoo.io import weights as weights_io
from zoo.mbart.model import MBart, MBartConfig
from zoo.mbart.tasks import TASKS

_TIED = (
    "model.shared.weight",
    "model.encoder.embed_tokens.weight",
    "model.decoder.embed_tokens.weight",
    "lm_head.weight",
)
_BIAS = "final_logits_bias"


class HubUnavailableError(RuntimeError):
    """The Hugging Face Hub cannot be used here (no network, offline mode, or no client)."""


# ----------------------------------------------------------------------------- key mapping
# kind: how our array relates to transformers' one.
#   "same": identical; "flat": ours [heads, head_dim] is their [heads * head_dim];
#   "t1"/"t2": a Linear weight: theirs [out, in], ours [in..., out...] split after axis 1 / 2
#   (q/k/v and fc kernels split after 1; the attention out kernel [heads, head_dim, d] after 2).


def _entries(c: MBartConfig) -> list[tuple[str, str, str]]:
    """(our '/'-joined param path, transformers key, kind) for every parameter but the
    tied embedding and final_logits_bias."""
    out: list[tuple[str, str, str]] = []

    def norm(ours: str, hf: str) -> None:
        out.append((f"{ours}/scale", f"{hf}.weight", "same"))
        out.append((f"{ours}/bias", f"{hf}.bias", "same"))

    def attention(ours: str, hf: str) -> None:
        for o, h in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            out.append((f"{ours}/{o}/kernel", f"{hf}.{h}.weight", "t1"))
            out.append((f"{ours}/{o}/bias", f"{hf}.{h}.bias", "flat"))
        out.append((f"{ours}/out/kernel", f"{hf}.out_proj.weight", "t2"))
        out.append((f"{ours}/out/bias", f"{hf}.out_proj.bias", "same"))

    for side, n in (("encoder", c.encoder_layers), ("decoder", c.decoder_layers)):
        hf_side = f"model.{side}"
        out.append((f"{side}_positions/embedding", f"{hf_side}.embed_positions.weight", "same"))
        norm(f"{side}_layernorm_embedding", f"{hf_side}.layernorm_embedding")
        for i in range(n):
            ours, hf = f"{side}_layer_{i}", f"{hf_side}.layers.{i}"
            attention(f"{ours}/self_attn", f"{hf}.self_attn")
            norm(f"{ours}/self_attn_layer_norm", f"{hf}.self_attn_layer_norm")
            if side == "decoder":
                attention(f"{ours}/encoder_attn", f"{hf}.encoder_attn")
                norm(f"{ours}/encoder_attn_layer_norm", f"{hf}.encoder_attn_layer_norm")
            for fc in ("fc1", "fc2"):
                out.append((f"{ours}/ffn/{fc}/kernel", f"{hf}.{fc}.weight", "t1"))
                out.append((f"{ours}/ffn/{fc}/bias", f"{hf}.{fc}.bias", "same"))
            norm(f"{ours}/final_layer_norm", f"{hf}.final_layer_norm")
        norm(f"{side}_layer_norm", f"{hf_side}.layer_norm")
    return out


def _hf_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if kind == "same":
        return shape
    if kind == "flat":
        return (math.prod(shape),)
    split = int(kind[1])
    return (math.prod(shape[split:]), math.prod(shape[:split]))


def _to_ours(kind: str, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    a = a.T if kind in ("t1", "t2") else a
    return np.ascontiguousarray(a.reshape(shape), dtype=np.float32)


def _to_hf(kind: str, x: np.ndarray, hf_shape: tuple[int, ...]) -> np.ndarray:
    if kind in ("t1", "t2"):
        return np.ascontiguousarray(x.reshape(hf_shape[::-1]).T)
    return np.ascontiguousarray(x.reshape(hf_shape))


def param_shapes(config: MBartConfig) -> dict[str, tuple[int, ...]]:
    """Our parameter shapes by '/'-joined path (evaluated abstractly: nothing is allocated)."""
    model = MBart(config)
    ids = jnp.ones((1, 1), jnp.int32)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), ids, ids, ids))["params"]
    flat = traverse_util.flatten_dict(meta.unbox(boxed), sep="/")
    return {k: tuple(v.shape) for k, v in flat.items()}


def _ignorable(key: str) -> bool:
    # fairseq bookkeeping, not weights: version counters and the sinusoidal-position dummy.
    return key.endswith(".version") or key.endswith("._float_tensor")


def _fairseq_to_hf_keys(state: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    """fairseq's mBART state dict -> transformers' key names (the converter's renaming)."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if _ignorable(key):
            continue
        if key == "decoder.output_projection.weight":
            out["lm_head.weight"] = value  # one more tied copy; checked against the others
            continue
        if ".in_proj_" in key:
            # Packed [3d, ...] in q, k, v order (fairseq MultiheadAttention.upgrade_state_dict).
            prefix, kind = key.rsplit(".in_proj_", 1)
            if value.shape[0] % 3:
                raise ValueError(
                    f"{path}: packed {key} has shape {tuple(value.shape)}, whose first dim is "
                    "not 3 * d_model; the file is not an mBART checkpoint"
                )
            for name, part in zip(("q", "k", "v"), np.split(value, 3, axis=0)):
                out[f"model.{prefix}.{name}_proj.{kind}"] = part
            continue
        out[f"model.{key}"] = value
    return out


# fairseq activation_fn -> ours (fairseq's "gelu" is torch's erf GELU).
_FAIRSEQ_ACTIVATIONS = {
    "gelu": "gelu",
    "relu": "relu",
    "gelu_fast": "gelu_tanh",
    "gelu_accurate": "gelu_tanh",
}


def _fairseq_args(ckpt: Any) -> dict[str, Any] | None:
    """The model arguments of a fairseq checkpoint: `args` (Namespace) or `cfg['model']`."""
    if not isinstance(ckpt, dict):
        return None
    candidates = [ckpt.get("args")]
    cfg = ckpt.get("cfg")
    if isinstance(cfg, dict):
        candidates.append(cfg.get("model"))
    for args in candidates:
        if isinstance(args, dict):
            return args
        if args is not None and type(args).__name__ == "Namespace":
            return vars(args)
    return None


def _config_from_fairseq(ckpt: Any, state: dict[str, np.ndarray], path: str) -> MBartConfig:
    """Config from the checkpoint's args; sizes always from the tensors themselves."""
    emb = state.get("model.encoder.embed_tokens.weight", state.get("lm_head.weight"))
    pos = state.get("model.encoder.embed_positions.weight")
    if emb is None or pos is None:
        raise ValueError(
            f"{path}: no encoder.embed_tokens / encoder.embed_positions weights; "
            "not a fairseq mBART checkpoint"
        )
    if "model.encoder.layer_norm.weight" not in state:
        # fairseq creates encoder.layer_norm only with --encoder-normalize-before (mBART);
        # without it the checkpoint is post-LN BART, which computes something else.
        raise ValueError(
            f"{path}: has no encoder.layer_norm, i.e. it is a post-LN (BART) checkpoint; "
            "only pre-LN mBART (--encoder-normalize-before) is supported"
        )

    def count(side: str) -> int:
        ids = {int(k.split(".")[3]) for k in state if k.startswith(f"model.{side}.layers.")}
        return max(ids) + 1 if ids else 0

    def ffn(side: str) -> int:
        return state[f"model.{side}.layers.0.fc1.weight"].shape[0]

    vocab, d_model = emb.shape
    fields: dict[str, Any] = dict(
        vocab_size=vocab,
        d_model=d_model,
        encoder_layers=count("encoder"),
        decoder_layers=count("decoder"),
        mlp_dim=ffn("encoder"),
        decoder_mlp_dim=ffn("decoder") if ffn("decoder") != ffn("encoder") else None,
        max_length=pos.shape[0] - 2,
    )
    args = _fairseq_args(ckpt)
    if args is None:
        heads = max(1, d_model // 64)
        warnings.warn(
            f"{path}: the checkpoint's args/cfg are missing or unreadable; sizes come from the "
            f"tensors, and heads={heads} (head_dim 64, as mBART), activation='gelu', "
            "scale_embedding=True are assumed. Pass load_mbart(..., config=MBartConfig(...)) "
            "if that is wrong",
            stacklevel=3,
        )
        fields.update(num_heads=heads)
        return _checked(MBartConfig(**fields), path)
    act = args.get("activation_fn", "gelu")
    if not isinstance(act, str) or act not in _FAIRSEQ_ACTIVATIONS:
        raise ValueError(
            f"{path}: args.activation_fn={act!r} is not supported; "
            f"supported: {sorted(_FAIRSEQ_ACTIVATIONS)}"
        )
    enc_heads = args.get("encoder_attention_heads", 16)
    dec_heads = args.get("decoder_attention_heads", enc_heads)
    fields.update(
        num_heads=enc_heads,
        decoder_num_heads=dec_heads if dec_heads != enc_heads else None,
        activation=_FAIRSEQ_ACTIVATIONS[act],
        dropout=args.get("dropout", 0.1),
        attention_dropout=args.get("attention_dropout", 0.0),
        activation_dropout=args.get("activation_dropout", args.get("relu_dropout", 0.0)),
        scale_embedding=not args.get("no_scale_embedding", False),
    )
    return _checked(MBartConfig(**fields), path)


def _checked(config: MBartConfig, path: str) -> MBartConfig:
    try:
        config.validate()
    except ValueError as e:
        raise ValueError(f"{path}: its args do not describe a valid mBART: {e}") from None
    return config


# ----------------------------------------------------------------------------- state <-> params

# Which config fields decide a key's shape, for the error message.
_SHAPE_FIELDS = (
    ("embed_positions", "max_position_embeddings, d_model"),
    ("fc1", "encoder_ffn_dim/decoder_ffn_dim, d_model"),
    ("fc2", "encoder_ffn_dim/decoder_ffn_dim, d_model"),
    ("_proj", "d_model, encoder_attention_heads/decoder_attention_heads"),
    ("embed_tokens", "vocab_size, d_model"),
    ("shared", "vocab_size, d_model"),
    ("lm_head", "vocab_size, d_model"),
    ("final_logits_bias", "vocab_size"),
)


def _check_shape(key: str, got: tuple[int, ...], want: tuple[int, ...], path: str) -> None:
    if tuple(got) == tuple(want):
        return
    fields = next((f for pat, f in _SHAPE_FIELDS if pat in key), "d_model")
    raise ValueError(
        f"{path}: {key} has shape {tuple(got)} but the config implies {tuple(want)} "
        f"(from {fields}). The config does not describe this checkpoint: fix config.json "
        "(or pass load_mbart(..., config=...)) so that these fields match the file"
    )


def params_from_hf_state(
    state: dict[str, np.ndarray], config: MBartConfig, path: str = "<state dict>"
) -> dict[str, Any]:
    """transformers-keyed tensors -> our param tree (float32 numpy), every shape checked."""
    shapes = param_shapes(config)
    flat: dict[str, np.ndarray] = {}
    present = [k for k in _TIED if k in state]
    if not present:
        raise ValueError(f"{path}: holds none of the embedding keys {list(_TIED)}")
    emb = state[present[0]]
    _check_shape(present[0], emb.shape, shapes["shared/embedding"], path)
    for key in present[1:]:
        if state[key].shape != emb.shape or not np.array_equal(state[key], emb):
            raise ValueError(
                f"{path}: {key} differs from {present[0]}; mBART ties them and this model has "
                "one matrix for both. Drop the untied copy from the file if it is stale"
            )
    flat["shared/embedding"] = np.asarray(emb, np.float32)
    vocab = shapes["final_logits_bias"][0]
    if _BIAS in state:
        _check_shape(_BIAS, state[_BIAS].shape, (1, vocab), path)
        flat["final_logits_bias"] = np.asarray(state[_BIAS], np.float32).reshape(vocab)
    else:
        flat["final_logits_bias"] = np.zeros((vocab,), np.float32)  # transformers' default
    used = {*present, _BIAS}
    for ours, hf, kind in _entries(config):
        if hf not in state:
            raise ValueError(
                f"{path}: missing {hf}; the config (encoder_layers={config.encoder_layers}, "
                f"decoder_layers={config.decoder_layers}) expects it. Check that the file "
                "is a complete mBART checkpoint and that config.json belongs to it"
            )
        _check_shape(hf, state[hf].shape, _hf_shape(kind, shapes[ours]), path)
        flat[ours] = _to_ours(kind, state[hf], shapes[ours])
        used.add(hf)
    unused = sorted(k for k in state if k not in used and not _ignorable(k))
    if unused:
        raise ValueError(
            f"{path}: {len(unused)} tensors are not used by the config, e.g. {unused[:4]}; "
            "the config has fewer layers (or other modules) than the checkpoint: fix "
            "config.json so that encoder_layers/decoder_layers match the file"
        )
    if set(flat) != set(shapes):  # a mapping bug, not a user error
        raise AssertionError(f"unmapped params: {sorted(set(shapes) ^ set(flat))}")
    return traverse_util.unflatten_dict(flat, sep="/")


def hf_state_from_params(config: MBartConfig, params: Any) -> dict[str, np.ndarray]:
    """Our param tree -> transformers' tensors (float32), the keys save_pretrained writes."""
    flat = {
        k: np.asarray(jax.device_get(v), np.float32)
        for k, v in traverse_util.flatten_dict(meta.unbox(params), sep="/").items()
    }
    shapes = param_shapes(config)
    if set(flat) != set(shapes):
        raise ValueError(
            f"params do not fit the config: missing {sorted(set(shapes) - set(flat))[:4]}, "
            f"extra {sorted(set(flat) - set(shapes))[:4]}; pass the config the params came from"
        )
    for k, shape in shapes.items():
        _check_shape(k, flat[k].shape, shape, "params")
    state = {
        # save_pretrained keeps one copy of the tied matrix: model.shared.weight.
        "model.shared.weight": np.ascontiguousarray(flat["shared/embedding"]),
        _BIAS: flat["final_logits_bias"].reshape(1, -1),
    }
    for ours, hf, kind in _entries(config):
        state[hf] = _to_hf(kind, flat[ours], _hf_shape(kind, shapes[ours]))
    return state


# ----------------------------------------------------------------------------- public API


def load_mbart(
    src: str | os.PathLike, *, config: MBartConfig | None = None
) -> tuple[MBart, dict[str, Any]]:
    """Loads an mBART checkpoint -> (model, params: nested dict of float32 numpy arrays).

    src: a transformers directory (config.json + model.safetensors[.index.json] or
    pytorch_model.bin[.index.json]), one such weights file (config.json beside it), a
    fairseq checkpoint file (*.pt), or a directory holding fairseq's model.pt.
    config: overrides the config read from the checkpoint (shapes are still checked).
    Raises FileNotFoundError for a missing path, ValueError for a checkpoint whose tensors
    do not match the config (naming the key, both shapes, the file and the fix), or one that
    is not an mBART checkpoint at all.
    """
    try:
        return _load_mbart(src, config=config)
    except (TypeError, AttributeError, IndexError, OverflowError) as e:
        # A checkpoint from a stranger can hold any structure; never a traceback for it.
        raise ValueError(
            f"{os.fspath(src)}: not an mBART checkpoint this loader understands "
            f"({type(e).__name__}: {' '.join(str(e).split())[:200]})"
        ) from None


def _load_mbart(
    src: str | os.PathLike, *, config: MBartConfig | None = None
) -> tuple[MBart, dict[str, Any]]:
    src = os.fspath(src)
    if not os.path.exists(src):
        hint = ""
        if is_hub_name(src):
            hint = (
                f"; {src!r} looks like a Hub name: download it on a machine with network "
                f"(zoo.mbart.convert.hub_download({src!r}, cache_dir) or "
                "`huggingface-cli download`) and pass the local directory"
            )
        raise FileNotFoundError(f"mBART checkpoint {src!r} does not exist{hint}")
    if os.path.isdir(src):
        weights = next(
            (
                os.path.join(src, f)
                for f in weights_io.TRANSFORMERS_WEIGHT_FILES
                if os.path.exists(os.path.join(src, f))
            ),
            None,
        )
        if weights is None:
            if os.path.exists(os.path.join(src, "model.pt")):
                return _load_fairseq(os.path.join(src, "model.pt"), config)
            raise FileNotFoundError(
                f"{src} holds none of {list(weights_io.TRANSFORMERS_WEIGHT_FILES)} nor a fairseq "
                "model.pt; pass the directory written by save_pretrained or the .pt file"
            )
    elif src.endswith(".pt"):
        return _load_fairseq(src, config)
    else:
        weights = src
    state = weights_io.read_transformers_weights(weights)
    if config is None:
        config_path = os.path.join(os.path.dirname(weights), "config.json")
        if not os.path.exists(config_path):
            raise FileNotFoundError(
                f"{config_path} is missing (needed next to {weights}); copy the checkpoint's "
                "config.json there or pass load_mbart(..., config=MBartConfig(...))"
            )
        try:
            config = MBartConfig.from_hf_config(_read_json(config_path))
        except ValueError as e:
            raise ValueError(f"{config_path}: {str(e).removeprefix('config.json ')}") from None
    return MBart(config), params_from_hf_state(state, config, weights)


def _read_json(path: str) -> dict:
    """A JSON object file, or one clear error naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: holds a JSON {type(value).__name__}, not an object")
    return value


def _load_fairseq(path: str, config: MBartConfig | None) -> tuple[MBart, dict[str, Any]]:
    ckpt = torch_pickle.load(path)
    raw = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(raw, dict):
        raise ValueError(
            f"{path}: no 'model' state dict (top-level keys: "
            f"{list(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__}); "
            "not a fairseq checkpoint"
        )
    state = _fairseq_to_hf_keys(raw, path)
    if config is None:
        config = _config_from_fairseq(ckpt, state, path)
    # fairseq has no output bias: final_logits_bias is absent and reads as zeros.
    return MBart(config), params_from_hf_state(state, config, path)


def save_mbart_hf(config: MBartConfig, params: Any, out_dir: str | os.PathLike) -> None:
    """Writes out_dir/config.json and out_dir/model.safetensors in transformers' layout.

    `MBartForConditionalGeneration.from_pretrained(out_dir)` loads it; `load_mbart(out_dir)`
    gives back the same config and bit-identical float32 params.
    """
    state = hf_state_from_params(config, params)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config.to_hf_config(), f, indent=2, sort_keys=True)
    # transformers refuses safetensors files without format metadata.
    save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})


_OFFLINE_VALUES = ("1", "true", "yes", "on")
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
_FILE_ENDINGS = (".pt", ".bin", ".ckpt", ".json", ".safetensors", ".model")


def is_hub_name(src: str) -> bool:
    """Whether `src` (not a local path) reads as a Hub repo id `org/name`: exactly one slash,
    no file ending, and no local folder called `org` (`runs/mbrat` is a mistyped path)."""
    return (
        _HUB_NAME.fullmatch(src) is not None
        and not src.endswith(_FILE_ENDINGS)
        and not os.path.isdir(src.split("/")[0])
    )


def hub_download(name: str, cache_dir: str | os.PathLike) -> str:
    """Downloads Hub repo `name` (e.g. "facebook/mbart-large-cc25") -> local directory.

    Needs the `huggingface_hub` package and network. Raises HubUnavailableError when it is
    not installed or HF_HUB_OFFLINE is set (and the files are not already in cache_dir).
    """
    how = (
        f"download {name!r} on a machine with network (`huggingface-cli download {name} "
        "--local-dir DIR`, or git clone https://huggingface.co/" + name + ") and pass DIR to "
        "load_mbart"
    )
    try:  # optional, and only for downloads: zoo never needs it offline
        import huggingface_hub
    except ImportError as e:
        raise HubUnavailableError(
            f"hub_download({name!r}) needs the huggingface_hub package and network; "
            f"pip install huggingface_hub, or {how}"
        ) from e
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt"]
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _OFFLINE_VALUES:
        try:
            return huggingface_hub.snapshot_download(
                name, cache_dir=os.fspath(cache_dir), allow_patterns=patterns, local_files_only=True
            )
        except Exception as e:  # noqa: BLE001 - any failure here means "not cached"
            raise HubUnavailableError(
                f"hub_download({name!r}): HF_HUB_OFFLINE is set and {cache_dir} has no copy; "
                f"it needs network. Unset HF_HUB_OFFLINE on a connected machine, or {how}"
            ) from e
    try:
        return huggingface_hub.snapshot_download(
            name, cache_dir=os.fspath(cache_dir), allow_patterns=patterns
        )
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise HubUnavailableError(
            f"hub_download({name!r}) failed ({e}); it needs network, or {how}"
        ) from e


# ----------------------------------------------------------------------------- zoo model dirs

SPM_NAMES = ("sentencepiece.bpe.model", "sentence.bpe.model", "spm.model")
_FITS_FIX = "the directory's model.json (or config.json) no longer describes its params/"


def load(src: str | os.PathLike) -> tuple[MBart, dict[str, Any]]:
    """(model, params) of any mBART checkpoint: a transformers directory or weights file, a
    fairseq `model.pt` (or a directory holding one), a zoo model directory (`zoo convert`,
    `zoo transfer`) or a `zoo train` workdir of an mBART task (its latest checkpoint).

    `model.apply({'params': params}, input_ids, attention_mask, decoder_input_ids)` ->
    logits [batch, tgt_len, vocab] f32 (attention_mask: [batch, src_len], 1 on real tokens).
    """
    src = os.fspath(src)
    if modeldir.is_model_dir(src):
        meta_ = modeldir.read_meta(src)
        if meta_["family"] != "mbart":
            raise ValueError(f"{src} holds a {meta_['family']} model, not mbart")
        config = MBartConfig.from_dict(meta_["config"])
        params = modeldir.load_params(src)
        modeldir.check_fits(params, param_shapes(config), src, _FITS_FIX)
        return MBart(config), params
    if os.path.isdir(os.path.join(src, "checkpoints")) and os.path.exists(
        os.path.join(src, "config.json")
    ):
        run = modeldir.read_run_config(src, [t.name for t in TASKS], "load")
        fields = run.model.to_dict()
        params = modeldir.load_params(src)
        if not fields.get("vocab_size"):  # 0 in a recipe = the tokenizer's: read it off the params
            fields["vocab_size"] = int(np.shape(params["shared"]["embedding"])[0])
        config = MBartConfig.from_dict(fields)
        modeldir.check_fits(params, param_shapes(config), src, _FITS_FIX)
        return MBart(config), params
    return load_mbart(src)


def check_sentencepiece(path: str, flag: str) -> None:
    """A clear error unless `path` is a sentencepiece model file (`flag` gave it)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path} does not exist")
    try:
        sentencepiece.SentencePieceProcessor(model_file=path)
    except (RuntimeError, OSError) as e:
        raise ValueError(
            f"{flag} {path} is not a sentencepiece model ({' '.join(str(e).split())[:120]})"
        ) from None


def _find_spm(src: str) -> str | None:
    base = src if os.path.isdir(src) else os.path.dirname(src)
    return next(
        (os.path.join(base, n) for n in SPM_NAMES if os.path.exists(os.path.join(base, n))), None
    )


def convert(
    src: str,
    out: str,
    *,
    spm: str | None = None,
    style: str | None = None,
    cache_dir: str = "checkpoints",
) -> str:
    """transformers / fairseq mBART (local path, or Hub name with network) -> a zoo model dir."""
    if not os.path.exists(src):
        if not is_hub_name(src):
            raise FileNotFoundError(f"{src} does not exist (no such file or directory)")
        src = hub_download(src, cache_dir)  # says clearly when offline
    model, params = load_mbart(src)
    config = model.config
    spm = spm or _find_spm(src)
    if spm:  # refuse a broken tokenizer now, not at the first `zoo translate`
        check_sentencepiece(spm, "--spm")
    if style is None:
        style = "mbart50" if config.vocab_size == 250054 else "cc25"
    files = {"sentencepiece.bpe.model": spm} if spm else {}
    tokenizer = {"style": style, "spm": "sentencepiece.bpe.model" if spm else ""}
    modeldir.save(
        out,
        family="mbart",
        config=config.to_dict(),
        params=params,
        tokenizer=tokenizer,
        files=files,
    )
    return out


def main(args) -> int:
    """`zoo convert mbart SRC OUT [--spm FILE] [--tokenizer-style cc25|mbart50]`."""
    try:
        out = convert(
            args.src, args.out, spm=args.spm, style=args.tokenizer_style, cache_dir=args.cache_dir
        )
    except HubUnavailableError as e:  # offline, or huggingface_hub not installed
        print(f"zoo: error: {e}", file=sys.stderr)
        return 2
    print(f"zoo: wrote {out} (model.json, params/, tokenizer)")
    return 0
