"""zoo: a JAX/Flax model zoo with one sharded training loop.

A core that knows no model family (`zoo.nn`, `zoo.train`, `zoo.data`, `zoo.decode`,
`zoo.io`), one folder per family (`zoo.mbart`, `zoo.peptide`, `zoo.zett`, `zoo.smoke`), the
table of every family's tasks (`zoo.tasks`) and the command line (`zoo.cli`). Data flows
files -> data -> task -> loop -> checkpoint, and at inference checkpoint -> model -> decode
-> files. Importing `zoo` imports nothing else.
"""
