"""transformers LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM <-> zoo.lm, no torch.

    config, params = read_hf("DIR")          # config.json + model.safetensors (or sharded)
    save_hf(config, params, "OUT")           # back, bit for bit (float32)
    model, params = load(SRC)                # transformers dir, zoo model dir or train workdir
    convert(SRC, OUT)                        # `zoo convert lm SRC OUT`: a zoo model dir

Every tensor's shape is checked against config.json; a mismatch, a missing or an unknown
tensor is one line naming the file, the tensor and the expected vs found shape.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from flax import traverse_util
from safetensors.numpy import save_file

from zoo.io import modeldir
from zoo.io.weights import TRANSFORMERS_WEIGHT_FILES, read_transformers_weights
from zoo.lm.model import LM, LMConfig
from zoo.nn import checks

# model_type -> transformers' architecture class name.
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}
# Files `convert` copies beside the parameters when SRC has them.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "generation_config.json",
)
# `zoo train` task names whose workdirs `load` accepts (zoo/lm/task.py's).
TRAIN_TASKS = ("causal_lm",)
_FITS_FIX = "convert the checkpoint again with `zoo convert lm`"


# ---------------------------------------------------------------------------------------------
# config.json
# ---------------------------------------------------------------------------------------------


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> LMConfig:
    """LMConfig from transformers' config.json (a dict); missing fields take transformers'
    defaults. An eos_token_id list keeps its first id (zoo's searches take one EOS)."""
    model_type = hf.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"{source} has model_type={model_type!r}; zoo.lm reads {sorted(ARCHITECTURES)}"
        )
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"{source} has hidden_act={act!r}; these models use 'silu' (SwiGLU)")
    if hf.get("mlp_bias", False):
        raise ValueError(f"{source} has mlp_bias=true, which zoo.lm does not implement")
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"{source} has partial_rotary_factor != 1, which zoo.lm lacks")
    try:  # a file may put anything anywhere: a wrong type is one line naming the file
        return _config_from_fields(hf, model_type)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source} does not describe a valid {model_type}: {e}") from None


def _config_from_fields(hf: dict[str, Any], model_type: str) -> LMConfig:
    heads = checks.int_in("model.num_heads", hf.get("num_attention_heads", 32), 1, checks.MAX_HEADS)
    hidden = checks.int_in("model.hidden_size", hf.get("hidden_size", 4096), 1, checks.MAX_WIDTH)
    head_dim = hf.get("head_dim")
    if model_type == "qwen2":
        qkv_bias, out_bias = True, False
        if hf.get("use_sliding_window", False):
            raise ValueError(
                "use_sliding_window=true: zoo.lm applies a window to every layer "
                "(Mistral) and lacks Qwen2's per-layer max_window_layers"
            )
        window = None
    else:
        qkv_bias = out_bias = bool(hf.get("attention_bias", False))
        window = hf.get("sliding_window") if model_type == "mistral" else None
    eos = hf.get("eos_token_id")
    fields = dict(
        vocab_size=hf.get("vocab_size", 32000),
        hidden_size=hidden,
        num_layers=hf.get("num_hidden_layers", 32),
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=None if head_dim in (None, hidden // heads) else head_dim,
        intermediate_size=hf.get("intermediate_size", 11008),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=float(hf.get("rope_theta", 10000.0)),
        rope_scaling=_rope_scaling(hf.get("rope_scaling")),
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        attention_bias=qkv_bias,
        attention_out_bias=out_bias,
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        sliding_window=window,
        model_type=model_type,
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=eos[0] if isinstance(eos, list) and eos else eos,
        pad_token_id=hf.get("pad_token_id"),
    )
    config = LMConfig(**fields)
    config.validate()
    return config


def _rope_scaling(rope: dict | None) -> dict | None:
    if rope is None:
        return None
    rope = dict(rope)
    if "type" in rope and "rope_type" not in rope:  # transformers' legacy key
        rope["rope_type"] = rope.pop("type")
    return None if rope.get("rope_type") == "default" else rope


def config_to_hf(config: LMConfig) -> dict[str, Any]:
    """transformers' config.json fields for the config's architecture."""
    if config.model_type == "qwen2" and not (
        config.attention_bias and not config.attention_out_bias
    ):
        raise ValueError("a Qwen2 export needs attention_bias=True and attention_out_bias=False")
    if config.model_type == "mistral" and (config.attention_bias or config.attention_out_bias):
        raise ValueError("Mistral has no attention biases; export as model_type 'llama'")
    if config.model_type == "llama" and config.attention_bias != config.attention_out_bias:
        raise ValueError(
            "Llama's attention_bias sets q/k/v and o_proj biases together; export a model "
            "with q/k/v biases only as model_type 'qwen2'"
        )
    if config.sliding_window is not None and config.model_type != "mistral":
        raise ValueError("only model_type 'mistral' exports a sliding_window")
    hf = {
        "architectures": [ARCHITECTURES[config.model_type]],
        "model_type": config.model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_size,
        "intermediate_size": config.intermediate_size,
        "hidden_act": "silu",
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": config.rope_scaling,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": config.tie_word_embeddings,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
    }
    if config.model_type == "llama":
        hf.update(attention_bias=config.attention_bias, mlp_bias=False, pretraining_tp=1)
    elif config.model_type == "mistral":
        hf["sliding_window"] = config.sliding_window
    else:
        hf.update(
            use_sliding_window=False, sliding_window=None, max_window_layers=config.num_layers
        )
    return hf


# ---------------------------------------------------------------------------------------------
# Tensors: (our '/'-path, transformers key, kind) for every parameter
# ---------------------------------------------------------------------------------------------


def _entries(c: LMConfig) -> list[tuple[str, str, str]]:
    out = [("embed_tokens/embedding", "model.embed_tokens.weight", "copy")]
    for i in range(c.num_layers):
        ours, hf = f"layers_{i}", f"model.layers.{i}"
        out.append((f"{ours}/input_layernorm/scale", f"{hf}.input_layernorm.weight", "copy"))
        for proj in ("q_proj", "k_proj", "v_proj"):
            out.append((f"{ours}/self_attn/{proj}/kernel", f"{hf}.self_attn.{proj}.weight", "in"))
            if c.attention_bias:
                out.append((f"{ours}/self_attn/{proj}/bias", f"{hf}.self_attn.{proj}.bias", "bias"))
        out.append((f"{ours}/self_attn/o_proj/kernel", f"{hf}.self_attn.o_proj.weight", "out"))
        if c.attention_out_bias:
            out.append((f"{ours}/self_attn/o_proj/bias", f"{hf}.self_attn.o_proj.bias", "copy"))
        out.append(
            (f"{ours}/post_attention_layernorm/scale", f"{hf}.post_attention_layernorm.weight",
             "copy")
        )  # fmt: skip
        for proj in ("gate_proj", "up_proj", "down_proj"):
            out.append((f"{ours}/mlp/{proj}/kernel", f"{hf}.mlp.{proj}.weight", "t"))
    out.append(("norm/scale", "model.norm.weight", "copy"))
    if not c.tie_word_embeddings:
        out.append(("lm_head/kernel", "lm_head.weight", "t"))
    return out


def param_shapes(c: LMConfig) -> dict[str, tuple[int, ...]]:
    """Our '/'-joined parameter paths -> shapes."""
    d, f, v, k = c.hidden_size, c.intermediate_size, c.vocab_size, c.head_size
    shapes: dict[str, tuple[int, ...]] = {"embed_tokens/embedding": (v, d), "norm/scale": (d,)}
    if not c.tie_word_embeddings:
        shapes["lm_head/kernel"] = (d, v)
    for i in range(c.num_layers):
        p = f"layers_{i}"
        shapes[f"{p}/input_layernorm/scale"] = shapes[f"{p}/post_attention_layernorm/scale"] = (d,)
        for proj, heads in (
            ("q_proj", c.num_heads),
            ("k_proj", c.kv_heads),
            ("v_proj", c.kv_heads),
        ):
            shapes[f"{p}/self_attn/{proj}/kernel"] = (d, heads, k)
            if c.attention_bias:
                shapes[f"{p}/self_attn/{proj}/bias"] = (heads, k)
        shapes[f"{p}/self_attn/o_proj/kernel"] = (c.num_heads, k, d)
        if c.attention_out_bias:
            shapes[f"{p}/self_attn/o_proj/bias"] = (d,)
        shapes[f"{p}/mlp/gate_proj/kernel"] = shapes[f"{p}/mlp/up_proj/kernel"] = (d, f)
        shapes[f"{p}/mlp/down_proj/kernel"] = (f, d)
    return shapes


def _hf_shape(kind: str, ours: tuple[int, ...]) -> tuple[int, ...]:
    if kind == "in":  # [D, H, K] <- [H*K, D]
        return (ours[1] * ours[2], ours[0])
    if kind == "out":  # [H, K, D] <- [D, H*K]
        return (ours[2], ours[0] * ours[1])
    if kind == "bias":  # [H, K] <- [H*K]
        return (ours[0] * ours[1],)
    if kind == "t":
        return (ours[1], ours[0])
    return ours


def _to_ours(kind: str, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(a, np.float32)
    if kind in ("in", "out", "t"):
        a = a.T
    return np.ascontiguousarray(a.reshape(shape))


def _to_hf(kind: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if kind == "in":
        x = x.reshape(x.shape[0], -1).T
    elif kind == "out":
        x = x.reshape(-1, x.shape[-1]).T
    elif kind == "bias":
        x = x.reshape(-1)
    elif kind == "t":
        x = x.T
    return np.ascontiguousarray(x)


def _ignorable(key: str, config: LMConfig) -> bool:
    # Old checkpoints saved the rotary inv_freq buffers; a tied lm_head may be saved too.
    return key.endswith("rotary_emb.inv_freq") or (
        key == "lm_head.weight" and config.tie_word_embeddings
    )


def params_from_hf_state(
    config: LMConfig, state: dict[str, np.ndarray], where=lambda key: "the checkpoint"
) -> dict[str, Any]:
    """transformers state dict (NumPy) -> our nested float32 params; `where(key)` names the
    file a tensor came from, for the errors."""
    shapes = param_shapes(config)
    flat = {}
    for ours, hf, kind in _entries(config):
        want = _hf_shape(kind, shapes[ours])
        if hf not in state:
            raise ValueError(
                f"{where(hf)}: lacks tensor {hf} (expected shape {list(want)} for this "
                f"config.json); the weights do not belong to this config"
            )
        got = tuple(np.shape(state[hf]))
        if got != want:
            raise ValueError(
                f"{where(hf)}: tensor {hf} has shape {list(got)}, but config.json makes it "
                f"{list(want)}; the weights do not belong to this config"
            )
        flat[ours] = _to_ours(kind, state[hf], shapes[ours])
    known = {hf for _, hf, _ in _entries(config)}
    unknown = sorted(k for k in state if k not in known and not _ignorable(k, config))
    if unknown:
        raise ValueError(
            f"{where(unknown[0])}: unexpected tensor {unknown[0]} (shape "
            f"{list(np.shape(state[unknown[0]]))}; {len(unknown)} unknown in all) that a "
            f"{config.model_type} with this config.json does not have"
        )
    return traverse_util.unflatten_dict(flat, sep="/")


def hf_state_from_params(config: LMConfig, params: Any) -> dict[str, np.ndarray]:
    flat = traverse_util.flatten_dict(params, sep="/")
    return {hf: _to_hf(kind, flat[ours]) for ours, hf, kind in _entries(config)}


# ---------------------------------------------------------------------------------------------
# Directories
# ---------------------------------------------------------------------------------------------


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def read_hf(src: str | os.PathLike) -> tuple[LMConfig, dict[str, Any]]:
    """(config, float32 params) of a transformers `save_pretrained` directory."""
    src = os.fspath(src)
    config_path = os.path.join(src, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"{src} has no config.json; pass a transformers directory (config.json + "
            "model.safetensors), a zoo model directory or a `zoo train` workdir"
        )
    config = config_from_hf(_read_json(config_path), config_path)
    weights = next(
        (os.path.join(src, n) for n in TRANSFORMERS_WEIGHT_FILES
         if os.path.isfile(os.path.join(src, n))),
        None,
    )  # fmt: skip
    if weights is None:
        raise FileNotFoundError(
            f"{src} has config.json but no weights ({' or '.join(TRANSFORMERS_WEIGHT_FILES)})"
        )
    state = read_transformers_weights(weights)
    if weights.endswith(".index.json"):
        weight_map = _read_json(weights).get("weight_map", {})
        where = lambda key: os.path.join(src, weight_map.get(key, os.path.basename(weights)))  # noqa: E731
    else:
        where = lambda key: weights  # noqa: E731
    return config, params_from_hf_state(config, state, where)


def save_hf(
    config: LMConfig, params: Any, out_dir: str | os.PathLike, max_shard_bytes: int = 5 << 30
) -> None:
    """Writes out_dir/config.json and model.safetensors, or, when the tensors take more than
    max_shard_bytes, model-0000i-of-0000n.safetensors shards and model.safetensors.index.json
    (transformers' layout; a tensor larger than a shard gets a shard of its own).
    `read_hf(out_dir)` gives back the same config and bit-identical float32 params."""
    state = hf_state_from_params(config, params)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config_to_hf(config), f, indent=2, sort_keys=True)
    total = sum(a.nbytes for a in state.values())
    # transformers refuses safetensors files without format metadata.
    if total <= max_shard_bytes:
        save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        return
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for key, a in state.items():
        if shards[-1] and size + a.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = a
        size += a.nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(out_dir, name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)


def is_workdir(src: str) -> bool:
    """Whether `src` looks like a `zoo train` workdir (config.json and checkpoints/)."""
    return os.path.isdir(os.path.join(src, "checkpoints")) and os.path.isfile(
        os.path.join(src, "config.json")
    )


def load_config_and_params(src: str | os.PathLike) -> tuple[LMConfig, dict[str, Any]]:
    """`load`'s (config, params) without building the module."""
    src = os.fspath(src)
    if modeldir.is_model_dir(src):
        meta = modeldir.read_meta(src)
        if meta["family"] != "lm":
            raise ValueError(f"{src} holds a {meta['family']} model, not lm")
        config = LMConfig.from_dict(meta["config"])
        params = modeldir.load_params(src)
    elif is_workdir(src):
        run = modeldir.read_run_config(src, TRAIN_TASKS, "--checkpoint")
        fields = run.model.to_dict()
        params = modeldir.load_params(src)
        if not fields.get("vocab_size"):  # 0 in a recipe = the tokenizer's: read it off the params
            fields["vocab_size"] = int(np.shape(params["embed_tokens"]["embedding"])[0])
        for key in ("head_dim", "sliding_window", "num_kv_heads"):  # a recipe's 0 = None
            if fields.get(key) == 0:
                fields[key] = None
        config = LMConfig.from_dict(fields)
    else:
        return read_hf(src)
    modeldir.check_fits(params, param_shapes(config), src, _FITS_FIX)
    return config, params


def load(src: str | os.PathLike) -> tuple[LM, dict[str, Any]]:
    """(model, params) of a transformers directory (Llama / Mistral / Qwen2), a zoo model
    directory (`zoo convert lm`) or a `zoo train` workdir of an LM task (latest checkpoint).

    `model.apply({'params': params}, input_ids, attention_mask)` -> logits [B, L, vocab] f32.
    """
    config, params = load_config_and_params(src)
    return LM(config), params


def convert(src: str | os.PathLike, out: str | os.PathLike) -> str:
    """A transformers directory -> a zoo model directory (family "lm") at `out`, with the
    tokenizer and generation files of TOKENIZER_FILES that SRC has. Returns `out`."""
    src, out = os.fspath(src), os.fspath(out)
    if not os.path.isdir(src):
        raise FileNotFoundError(f"{src} is not a directory; pass a transformers model directory")
    config, params = read_hf(src)
    files = {
        n: os.path.join(src, n) for n in TOKENIZER_FILES if os.path.isfile(os.path.join(src, n))
    }
    tokenizer = {"file": "tokenizer.json"} if "tokenizer.json" in files else {}
    modeldir.save(
        out, family="lm", config=config.to_dict(), params=params, tokenizer=tokenizer, files=files
    )
    return out


def main(args) -> int:
    """`zoo convert lm SRC OUT`: a transformers Llama / Mistral / Qwen2 directory."""
    out = convert(args.src, args.out)
    copied = [n for n in TOKENIZER_FILES if os.path.isfile(os.path.join(out, n))]
    print(f"zoo: wrote {out} (model.json, params/{', ' + ', '.join(copied) if copied else ''})")
    return 0
