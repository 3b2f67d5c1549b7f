"""The loop's smallest task: a small encoder-decoder learns to reverse token sequences.

- `zoo.smoke.data`: the generated "reverse a sequence" TFDS dataset (ArrayRecord, no
  TensorFlow).
- `zoo.smoke.task`: `ReverseTask`, the task `recipes/smoke.py` trains (model:
  `zoo.nn.encoder_decoder`).
"""
