"""The nine-species benchmark, leave-one-species-out, at paper scale (CrossNovo hybrid).

The benchmark (Tran et al. 2017; MassIVE MSV000081382, and the revised "v2" of Wen &
Noble, MSV000090982) is distributed as one annotated MGF file (or folder of files) per
species. Put them in one directory, named so that the species appears in the file name
(e.g. `yeast.mgf`, `high.yeast.PXD003868.mgf`, `yeast_part1.mgf`), and pass it as
task.manual_dir. The held-out species (task.test_species) is the test split, the next
species in SPECIES order validates, and the other seven train. Nothing is downloaded.

Variants:
  tiny  tests (a few steps on a directory of small MGF files, e.g. simulated per species)
  full  the paper's scale: Casanovo-sized encoder and AR decoder (d 512, 9 layers, 8 heads,
        FFN 1024), PrimeNovo-sized NAR decoder (9 layers, 40 slots), 150 peaks, peptides
        up to 100 residues; global batch 256; bfloat16 compute; for 8 TPU/GPU chips.

  zoo compile --config recipes/denovo_nine_species.py:full --topology v5e:2x4
  zoo train --config recipes/denovo_nine_species.py:full --workdir gs://BUCKET/ns_yeast_h1 \\
      --config.task.manual_dir=/data/nine_species --config.task.test_species=yeast
  zoo train --config recipes/denovo_nine_species.py:full --workdir gs://BUCKET/ns_yeast_h2 \\
      --config.task.manual_dir=/data/nine_species --config.task.test_species=yeast \\
      --config.task.stage=ar --config.train.init_from=gs://BUCKET/ns_yeast_h1 \\
      --config.optim.frozen='("^encoder_", "^nar_")'
  zoo denovo --checkpoint gs://BUCKET/ns_yeast_h2 --spectra /data/nine_species/yeast.mgf \\
      --out yeast.mztab --mode hybrid --beam 5
"""

import common
import ml_collections

SPECIES = (
    "mouse",
    "human",
    "yeast",
    "mmazei",
    "bacillus",
    "clambacteria",
    "honeybee",
    "tomato",
    "vigna",
)


def species_splits(test_species: str) -> dict[str, tuple[str, ...]]:
    """split -> glob patterns (relative to manual_dir) for leave-one-species-out."""
    if test_species not in SPECIES:
        raise ValueError(f"task.test_species={test_species!r}; use one of {SPECIES}")
    i = SPECIES.index(test_species)
    valid = SPECIES[(i + 1) % len(SPECIES)]

    def files(name):
        return (f"*{name}*.mgf",)

    train = tuple(p for s in SPECIES if s not in (test_species, valid) for p in files(s))
    return {"train": train, "validation": files(valid), "test": files(test_species)}


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    if variant not in ("tiny", "full"):
        raise ValueError(f"denovo_nine_species variant {variant!r}; use tiny or full")
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.task = common.denovo_task(dataset="mgf", max_peaks=150)  # Casanovo's n_peaks
    c.task.dataset_name = "nine_species"  # TFDS config name prefix
    c.task.manual_dir = "~/data/nine_species"  # the benchmark's MGF files (see docstring)
    c.task.test_species = "yeast"  # held out
    c.task.splits = ml_collections.ConfigDict(species_splits("yeast"))  # set from test_species
    # Casanovo-sized encoder and AR decoder, PrimeNovo-sized NAR decoder.
    c.model = common.peptide_model(
        d_model=512,
        n_heads=8,
        d_ff=1024,
        layers=9,
        max_charge=10,
        nar_slots=40,
        max_peptide_len=100,
        dtype="bfloat16",
    )
    c.data = ml_collections.ConfigDict()
    c.data.mode = "pad"  # spectra batch at fixed shapes (max_peaks, max_peptide_len)
    c.data.global_batch_size = 256  # spectra per step over all devices
    c.mesh = common.mesh()
    c.optim = common.optim(  # CrossNovo: AdamW 5e-4, cosine
        learning_rate=5e-4,
        warmup_steps=10_000,
        end_learning_rate_ratio=0.0,
        b2=0.999,
        eps=1e-8,
        weight_decay=1e-5,
    )
    # init_from: e.g. a `zoo convert casanovo` dir, with init_from_patterns
    # ("^encoder_", "^ar_") to warm-start the hybrid's encoder and AR decoder.
    c.train = common.train(num_steps=300_000, log_every=100)
    c.eval = common.evaluation(every_steps=10_000, num_batches=50)
    c.checkpoint = common.checkpoint(every_steps=5_000, keep_every=50_000)

    if variant == "tiny":
        c.task.max_peaks = 32
        c.model.d_model = 32
        c.model.n_heads = 2
        c.model.d_ff = 64
        c.model.encoder_layers = 1
        c.model.ar_layers = 1
        c.model.nar_layers = 1
        c.model.nar_slots = 16  # the shapes of denovo_demo.py:tiny (tests share compiles)
        c.model.max_peptide_len = 9
        c.model.max_charge = 4
        c.model.dtype = "float32"
        c.data.global_batch_size = 16
        c.optim.warmup_steps = 2
        c.train.num_steps = 4
        c.train.log_every = 1
        c.train.progress_bar = False
        c.eval.every_steps = 0
        c.eval.num_batches = 0
        c.checkpoint.every_steps = 2
        c.checkpoint.keep_last = 0
        c.checkpoint.keep_every = 0
    return c
