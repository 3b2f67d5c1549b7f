"""Which checkpoints a run keeps: the last N, plus every K-th step forever."""

from tests.train import runner


def test_keep_last_n_and_every_k(tmp_path, tfds_dir):
    code = runner.train_in_process(
        tmp_path,
        tfds_dir,
        "--config.train.num_steps=30",
        "--config.checkpoint.every_steps=5",
        "--config.checkpoint.keep_last=2",
        "--config.checkpoint.keep_every=10",
    )
    assert code == 0
    assert runner.checkpoint_steps(tmp_path) == [10, 20, 25, 30]
