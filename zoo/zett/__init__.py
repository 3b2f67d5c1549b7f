"""Zero-shot tokenizer transfer (ZeTT): move a model to a new tokenizer without training it.

Python face:

    zoo.zett.transfer(CHECKPOINT, "new.model", OUT, method="hypernet", hypernet_dir=HN_DIR)
    emb, bias = zoo.zett.transfer_embeddings("fvt", source_tok, target_tok, E, bias)

Files (builds on the mBART family):
- `hypernet`: the hypernetwork that predicts a token's embedding from its decomposition into
  the original tokens; the FVT and lexical baselines.
- `vocab`: decomposition of new tokens into source tokens, tokenizer sampling, tokenizer files.
- `batches`: training batches tokenized by a tokenizer sampled every step.
- `task`: `tokenizer_transfer`, the hypernetwork's training task for the loop.
- `transfer`: `zoo transfer` (hypernet / FVT / lexical) -> a zoo model dir. The package's
  `zoo.zett.transfer` is that module's `transfer` function; reach the module's other names
  with `from zoo.zett.transfer import ...`.
"""

from zoo.zett.hypernet import Hypernet, HypernetConfig
from zoo.zett.transfer import METHODS, load_hypernet, transfer, transfer_embeddings

__all__ = [
    "METHODS",
    "Hypernet",
    "HypernetConfig",
    "load_hypernet",
    "transfer",
    "transfer_embeddings",
]
