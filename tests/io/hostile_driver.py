"""Runs `zoo convert` on every hostile file in one process, under a memory limit; reports JSON.

    python -m tests.io.hostile_driver CASE_DIR MARKER_DIR RESULTS.json

One process for all cases keeps the test fast (zoo is imported once) and lets the end of the
run check that no case changed the process: a path still writes where it says, tensors still
load with their values, the loader's functions are unchanged. The child limits its own
address space (RLIMIT_AS) after a warm-up, so a case that tried to allocate gigabytes fails
with MemoryError instead of passing unnoticed.
"""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import re
import resource
import sys
import time

import numpy as np

from tests.fixtures import hostile
from zoo import cli
from zoo.io import torch_globals, torch_pickle

REPO = pathlib.Path(__file__).resolve().parents[2]
HEADROOM = 3 * 2**30  # bytes of address space each case may use beyond the warmed-up process


def _vm_bytes() -> int:
    text = pathlib.Path("/proc/self/status").read_text()
    return int(re.search(r"VmSize:\s+(\d+)", text).group(1)) * 1024


def _rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _convert(args: list[str]) -> tuple[int | str, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code: int | str = cli.main(args)
        except BaseException as e:  # noqa: BLE001 - a traceback is a finding, not a crash
            code = f"raised {type(e).__name__}: {e}"
    return code, err.getvalue()


def main(case_dir: str, marker_dir: str, results: str) -> None:
    folder, markers = pathlib.Path(case_dir), pathlib.Path(marker_dir)
    out_root = folder / "_out"
    cases = hostile.write_all(folder, markers)
    defaults = {
        name: getattr(fn, "__defaults__", None)
        for name, fn in vars(torch_globals).items()
        if callable(fn)
    }
    # Warm up (jax, orbax, tensorstore) on a good checkpoint, then limit the address space.
    code, err = _convert(["convert", "casanovo", str(hostile.CASANOVO_CKPT), str(out_root / "ok")])
    assert code == 0, err
    limit = _vm_bytes() + HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    report = {"cases": {}, "limit_bytes": limit, "limit_refused_4gb": False}
    try:
        bytearray(4 * 2**30)
    except MemoryError:
        report["limit_refused_4gb"] = True
    for n, case in enumerate(cases):
        print(f"case {case.name}", file=sys.__stderr__, flush=True)
        before, t0 = _rss_peak(), time.perf_counter()
        args = ["convert", case.family, str(folder / case.src), str(out_root / str(n)), *case.extra]
        code, err = _convert(args)
        report["cases"][case.name] = {
            "code": code,
            "stderr": err,
            "expect": case.expect,
            "src": str(folder / case.src),
            "seconds": time.perf_counter() - t0,
            "rss_growth_bytes": _rss_peak() - before,
            "wrote_model": (out_root / str(n) / "model.json").exists(),
        }
    # Is the process still itself?
    probe = folder / "probe" / "written.txt"
    probe.parent.mkdir(exist_ok=True)
    probe.write_text("ok")
    loaded = torch_pickle.load(REPO / "tests" / "fixtures" / "torch_pickle" / "tensors_zip.pt")
    expected = dict(np.load(REPO / "tests" / "fixtures" / "torch_pickle" / "expected.npz"))
    report["clean"] = {
        "path_writes_where_it_says": probe.read_text() == "ok"
        and sorted(p.name for p in probe.parent.iterdir()) == ["written.txt"],
        "pure_path_joins": str(pathlib.PurePosixPath("a") / "b") == "a/b",
        "tensors_load_unchanged": bool(
            np.array_equal(loaded["f32"], expected["tensors::f32"])
            and np.array_equal(loaded["0.weight"], expected["tensors::0.weight"])
        ),
        "loader_functions_unchanged": defaults
        == {
            name: getattr(fn, "__defaults__", None)
            for name, fn in vars(torch_globals).items()
            if callable(fn)
        },
        "markers": sorted(p.name for p in markers.iterdir()) if markers.exists() else [],
    }
    pathlib.Path(results).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:4])
