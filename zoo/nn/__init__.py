"""The core's layers: linen modules with logical axis names on every parameter.

Part of the core: nothing here knows a model family, a loss, a file or the loop.

- `zoo.nn.layers`: Dense, LayerNorm, Embed, positions, attention (self / cross / causal, with
  the halves a KV cache needs), feed-forward.
- `zoo.nn.encoder_decoder`: the pre-LN encoder-decoder Transformer that mBART and the smoke
  task share, with incremental decoding.
- `zoo.nn.cache`: the decoding-cache conventions models and searches share (`BEAM_SHARED`,
  `repeat_rows`, `gather_rows`).

Logical axis names (`batch`, `length`, `embed`, `heads`, `kv`, `mlp`, `vocab`, `positions`)
are mapped to mesh axes by one table, `zoo.train.mesh.RULES`.
"""
