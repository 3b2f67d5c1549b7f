"""Files in and out, safely: zoo model directories, torch and safetensors readers, paths.

Part of the core: nothing here knows a model family.

- `zoo.io.modeldir`: the directory `zoo convert` / `zoo transfer` write (model.json, params/,
  tokenizer files) and the parameter reader that also accepts a `zoo train` workdir.
- `zoo.io.torch_pickle`: a restricted unpickler for `torch.save` files (no torch, no code
  from the file runs).
- `zoo.io.weights`: transformers weight files (safetensors, `.bin`, sharded indexes).
- `zoo.io.paths`: local paths and object-store URLs (gs://).
"""
