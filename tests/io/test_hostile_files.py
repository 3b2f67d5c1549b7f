"""Hostile and damaged checkpoints through `zoo convert`, as an attacker or a bad download would
hand them over (tests/fixtures/hostile.py writes them; tests/io/hostile_driver.py runs them).

Every case must end with exit status 2 and one line naming the file and what is wrong: no
traceback, no code run (no marker file), no gigabyte allocation (the child process runs
under an address-space limit, and its peak memory may not grow), no model written, and the
process is still sound afterwards (paths write where they say, tensors load with their
values, the loader's functions are untouched).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from tests.fixtures import hostile
from tests.train import runner

CASES = {c.name: c for c in hostile.write_all(pathlib.Path("/nonexistent"), pathlib.Path(), False)}
MAX_GROWTH = 512 * 2**20  # bytes of resident memory one hostile file may cost
MAX_SECONDS = 30.0


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    results = root / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.io.hostile_driver", root / "cases", root / "markers"]
        + [results],
        cwd=runner.REPO,
        env=runner.env_for(1),
        capture_output=True,
        text=True,
        timeout=900,
    )
    started = [line for line in proc.stderr.splitlines() if line.startswith("case ")]
    assert proc.returncode == 0, (
        f"the driver died ({proc.returncode}) during {started[-1:] or 'the warm-up'}:\n"
        f"{proc.stderr[-3000:]}"
    )
    return json.loads(results.read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_file_is_one_clear_error_and_nothing_else(report, name):
    case, got = CASES[name], report["cases"][name]
    lines = got["stderr"].strip().splitlines()
    assert got["code"] == 2, got
    assert len(lines) == 1 and lines[0].startswith("zoo: error: "), lines
    assert (case.names or got["src"]) in lines[0], lines[0]
    assert case.expect in lines[0], lines[0]
    assert "root:" not in lines[0]  # nothing read from outside the checkpoint appears
    assert not got["wrote_model"]
    assert got["rss_growth_bytes"] < MAX_GROWTH, got["rss_growth_bytes"]
    assert got["seconds"] < MAX_SECONDS


def test_no_payload_ran_and_the_process_is_unchanged(report):
    clean = report["clean"]
    assert clean["markers"] == []
    assert clean["path_writes_where_it_says"]
    assert clean["pure_path_joins"]
    assert clean["tensors_load_unchanged"]
    assert clean["loader_functions_unchanged"]


def test_every_case_of_the_corpus_ran_under_a_memory_limit(report):
    assert sorted(report["cases"]) == sorted(CASES)
    assert report["limit_refused_4gb"]  # the child could not have allocated what files claim
