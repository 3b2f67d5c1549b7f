"""mBART (Liu et al. 2020) as transformers' `MBartForConditionalGeneration`, in linen.

mBART is the pre-LN `EncoderDecoder` of `zoo.nn.encoder_decoder` with one particular
configuration (reference: /work/shared/reference/mbart.md section 1):
pre-LN sublayers, LayerNorm after the embeddings and at the end of each stack (eps 1e-5),
token embeddings scaled by sqrt(d_model), learned positions read at row position + 2,
exact erf GELU (ReLU for fine-tuned mBART-50), one embedding shared by encoder input,
decoder input and the output projection, plus `final_logits_bias`.

Public face:
  MBartConfig (from_hf_config / to_hf_config / from_dict / to_dict), MBart (the module),
  encode / init_cache / decode_step: pure functions for incremental decoding
  (zoo.decode's searches call these).

Positions are `arange(len) + 2` as in transformers, so batches must be right-padded
(fairseq's padding-aware positions agree with this only for right padding).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from zoo.nn import checks, encoder_decoder

# transformers' activation_function names -> ours (`zoo.nn.layers.ACTIVATIONS`).
_HF_ACTIVATIONS = {
    "gelu": "gelu",  # torch's default GELU is the exact erf form
    "relu": "relu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
}
_OUR_TO_HF_ACTIVATION = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_new"}
# Our config fields -> transformers' config.json keys, for error messages.
_OUR_TO_HF_FIELD = {
    "num_heads": "encoder_attention_heads",
    "decoder_num_heads": "decoder_attention_heads",
    "mlp_dim": "encoder_ffn_dim",
    "decoder_mlp_dim": "decoder_ffn_dim",
    "max_length": "max_position_embeddings",
}


@dataclasses.dataclass(frozen=True)
class MBartConfig(encoder_decoder.TransformerConfig):
    """TransformerConfig with mBART-large defaults and the special token ids.

    Field names follow `TransformerConfig`; `from_hf_config` maps transformers' names
    (d_model, encoder_attention_heads, encoder_ffn_dim, max_position_embeddings, ...).
    """

    vocab_size: int = 250027  # cc25; mBART-50 has 250054
    d_model: int = 1024
    num_heads: int = 16
    mlp_dim: int = 4096
    encoder_layers: int = 12
    decoder_layers: int = 12
    max_length: int = 1024  # HF max_position_embeddings; the table has 2 more rows
    position_offset: int = 2
    positions: str = "learned"
    activation: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    layernorm_embedding: bool = True
    scale_embedding: bool = True
    final_logits_bias: bool = True
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    # cc25: the target language code (set per direction); mBART-50: 2 (</s>).
    decoder_start_token_id: int | None = None
    forced_bos_token_id: int | None = None  # mBART-50: the target language code
    forced_eos_token_id: int | None = 2

    def validate(self) -> None:
        super().validate()
        for field in ("pad_token_id", "bos_token_id", "eos_token_id"):
            checks.int_in(f"model.{field}", getattr(self, field), 0, self.vocab_size - 1)
        for field in ("decoder_start_token_id", "forced_bos_token_id", "forced_eos_token_id"):
            if getattr(self, field) is not None:
                checks.int_in(f"model.{field}", getattr(self, field), 0, self.vocab_size - 1)
        if self.positions != "learned" or self.position_offset != 2:
            raise ValueError(
                f"mBART uses learned positions with offset 2, got positions={self.positions!r}, "
                f"position_offset={self.position_offset}; use TransformerConfig for other layouts"
            )

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], **overrides: Any) -> MBartConfig:
        """From transformers' config.json (a dict). Missing fields take transformers' defaults.

        Note transformers' default scale_embedding is False, but every released mBART
        checkpoint's config.json sets it to true. LayerDrop fields are accepted and
        ignored (training-time only; not implemented here).
        """
        model_type = hf.get("model_type", "mbart")
        if model_type != "mbart":
            raise ValueError(
                f"config.json has model_type={model_type!r}; this loader is for 'mbart' "
                "(BART is post-LN and would compute different outputs)"
            )
        if not hf.get("tie_word_embeddings", True):
            raise ValueError(
                "config.json has tie_word_embeddings=false; mBART here always ties the "
                "output projection to the shared embedding"
            )
        act = hf.get("activation_function", "gelu")
        if not isinstance(act, str) or act not in _HF_ACTIVATIONS:
            raise ValueError(
                f"config.json activation_function={act!r} is not supported; "
                f"supported: {sorted(_HF_ACTIVATIONS)}"
            )
        enc_heads = hf.get("encoder_attention_heads", 16)
        dec_heads = hf.get("decoder_attention_heads", 16)
        enc_ffn = hf.get("encoder_ffn_dim", 4096)
        dec_ffn = hf.get("decoder_ffn_dim", 4096)
        fields = dict(
            vocab_size=hf.get("vocab_size", 50265),
            d_model=hf.get("d_model", 1024),
            num_heads=enc_heads,
            decoder_num_heads=None if dec_heads == enc_heads else dec_heads,
            mlp_dim=enc_ffn,
            decoder_mlp_dim=None if dec_ffn == enc_ffn else dec_ffn,
            encoder_layers=hf.get("encoder_layers", 12),
            decoder_layers=hf.get("decoder_layers", 12),
            max_length=hf.get("max_position_embeddings", 1024),
            activation=_HF_ACTIVATIONS[act],
            dropout=hf.get("dropout", 0.1),
            attention_dropout=hf.get("attention_dropout", 0.0),
            activation_dropout=hf.get("activation_dropout", 0.0),
            scale_embedding=hf.get("scale_embedding", False),
            pad_token_id=hf.get("pad_token_id", 1),
            bos_token_id=hf.get("bos_token_id", 0),
            eos_token_id=hf.get("eos_token_id", 2),
            decoder_start_token_id=hf.get("decoder_start_token_id"),
            forced_bos_token_id=hf.get("forced_bos_token_id"),
            forced_eos_token_id=hf.get("forced_eos_token_id", 2),
        )
        fields.update(overrides)
        config = cls(**fields)
        try:
            config.validate()
        except ValueError as e:
            message = str(e)
            for ours, theirs in _OUR_TO_HF_FIELD.items():
                message = message.replace(f"model.{ours}=", f"{theirs}=")
            message = message.replace("model.", "")
            raise ValueError(f"config.json does not describe a valid mBART: {message}") from None
        return config

    def to_hf_config(self) -> dict[str, Any]:
        """transformers' config.json fields for `MBartForConditionalGeneration`."""
        if self.activation not in _OUR_TO_HF_ACTIVATION:
            raise ValueError(f"activation={self.activation!r} has no transformers name")
        if not (self.layernorm_embedding and self.final_logits_bias):
            raise ValueError(
                "an mBART export needs layernorm_embedding=True and final_logits_bias=True"
            )
        return {
            "architectures": ["MBartForConditionalGeneration"],
            "model_type": "mbart",
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "encoder_layers": self.encoder_layers,
            "decoder_layers": self.decoder_layers,
            "num_hidden_layers": self.encoder_layers,
            "encoder_attention_heads": self.num_heads,
            "decoder_attention_heads": self.dec_heads,
            "encoder_ffn_dim": self.mlp_dim,
            "decoder_ffn_dim": self.dec_mlp_dim,
            "activation_function": _OUR_TO_HF_ACTIVATION[self.activation],
            "max_position_embeddings": self.max_length,
            "scale_embedding": self.scale_embedding,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "activation_dropout": self.activation_dropout,
            "classifier_dropout": 0.0,
            "encoder_layerdrop": 0.0,
            "decoder_layerdrop": 0.0,
            "init_std": 0.02,
            "is_encoder_decoder": True,
            "use_cache": True,
            "tie_word_embeddings": True,
            "pad_token_id": self.pad_token_id,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "decoder_start_token_id": self.decoder_start_token_id,
            "forced_bos_token_id": self.forced_bos_token_id,
            "forced_eos_token_id": self.forced_eos_token_id,
            "dtype": "float32",
        }

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-serialisable (for model.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MBartConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown MBartConfig fields {unknown}; known fields: {sorted(known)}")
        config = cls(**d)
        config.validate()
        return config


class MBart(encoder_decoder.EncoderDecoder):
    """`MBartForConditionalGeneration` in linen: the core's `EncoderDecoder` with an MBartConfig.

    `model.apply({'params': p}, input_ids, attention_mask, decoder_input_ids,
    decoder_attention_mask=None, deterministic=True)` -> logits [B, T, vocab] f32;
    `method=model.encode` -> encoder output [B, S, d_model].
    Parameter tree: shared/embedding, {encoder,decoder}_positions/embedding,
    {encoder,decoder}_layernorm_embedding, {encoder,decoder}_layer_{i}/...,
    {encoder,decoder}_layer_norm, final_logits_bias (see zoo.mbart.convert for the
    mapping to transformers' keys).
    """

    config: MBartConfig


# Incremental decoding: pure functions over (model, params); zoo.decode's searches call them.


def encode(model: MBart, params: Any, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """input_ids, attention_mask: [B, S] (right-padded) -> encoder output [B, S, d_model]."""
    return model.apply({"params": params}, input_ids, attention_mask, method=model.encode)


def init_cache(
    model: MBart, params: Any, encoded: jax.Array, attention_mask: jax.Array, max_length: int
) -> dict:
    """Decoding cache for up to max_length decoder tokens (static under jit).

    encoded: [B, S, d_model]; attention_mask: [B, S]. Returns a pytree whose every leaf
    has leading dim B (beam search may repeat or gather rows): see
    `EncoderDecoder.init_decode_cache` for the layout.
    Raises ValueError if max_length exceeds the position table (config.max_length).
    """
    return model.apply(
        {"params": params}, encoded, attention_mask, max_length, method=model.init_decode_cache
    )


def decode_step(
    model: MBart, params: Any, cache: dict, token_ids_B: jax.Array
) -> tuple[jax.Array, dict]:
    """Feeds one token per row at the row's cache index (position id = index + 2).

    token_ids_B: [B] int. Returns (logits [B, vocab] f32 for the next token, new cache with
    index + 1). Stepping a row past the cache's max_length is not checked (jit): size the
    cache for the longest output.
    """
    return model.apply({"params": params}, cache, token_ids_B, method=model.decode_step)
