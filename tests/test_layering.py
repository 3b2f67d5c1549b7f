"""The house rules of ARCHITECTURE.md, checked by reading every module's imports with `ast`.

- The core (`zoo.nn`, `zoo.train`, `zoo.data`, `zoo.decode`, `zoo.io`) imports no family and
  none of the entry modules (`zoo.cli`, `zoo.tasks`).
- A model file (`zoo/<family>/model.py`, and ZeTT's `hypernet.py` and `encoder.py`) imports
  nothing of zoo but `zoo.nn` and its family's other model files: a model is usable with
  nothing but `model.apply`.
- A family imports the core, itself, and the families it builds on (zett: mbart, lm); no
  family imports `zoo.tasks` (the name table of every family's tasks).
- Nothing imports `zoo.cli`.
- No zoo module imports another zoo module inside a function (that hides a dependency).
- No import circle among zoo modules.

Each rule is shown to catch a synthetic offending module added to the real import graph.
"""

from __future__ import annotations

import ast
import functools
import itertools
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "zoo"
CORE = ("zoo.nn", "zoo.train", "zoo.data", "zoo.decode", "zoo.io")
FAMILIES = ("zoo.mbart", "zoo.peptide", "zoo.zett", "zoo.smoke", "zoo.lm")
ENTRY = ("zoo.cli", "zoo.tasks")
BUILDS_ON = {"zoo.zett": ("zoo.mbart", "zoo.lm")}  # a family -> the families it may import
MODEL_FILES = ("zoo.zett.hypernet", "zoo.zett.encoder")  # model files not named model.py


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _real_sources() -> tuple[tuple[str, str, bool], ...]:
    return tuple(
        (module_name(p), p.read_text(), p.name == "__init__.py") for p in sorted(ROOT.rglob("*.py"))
    )


def real_sources() -> dict[str, tuple[str, bool]]:
    """module name -> (source text, is a package)."""
    return {name: (source, package) for name, source, package in _real_sources()}


@functools.cache
def _statements(module: str, source: str, is_package: bool):
    """(base module, imported names, line, inside a function) of every zoo import statement."""
    tree = ast.parse(source)
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out.append((a.name, (), node.lineno, id(node) in in_function))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = tuple(a.name for a in node.names)
            out.append((base, names, node.lineno, id(node) in in_function))
    return [s for s in out if s[0] == "zoo" or s[0].startswith("zoo.")]


def imports(module: str, source: str, is_package: bool, known) -> list[tuple[str, int, bool]]:
    """(imported zoo module, line, inside a function) for every import statement of `module`.

    `from P import n` names the submodule P.n when that is a module, else P itself."""
    out = []
    for base, names, line, local in _statements(module, source, is_package):
        targets = [f"{base}.{n}" if f"{base}.{n}" in known else base for n in names] or [base]
        out += [(t, line, local) for t in targets]
    return out


def graph(sources: dict[str, tuple[str, bool]]) -> dict[str, list[tuple[str, int, bool]]]:
    known = set(sources)
    return {m: imports(m, src, pkg, known) for m, (src, pkg) in sources.items()}


def area(module: str) -> str | None:
    """The core package, family or entry module a zoo module belongs to."""
    for prefix in CORE + FAMILIES + ENTRY:
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return None


def is_model_file(module: str) -> bool:
    return module in MODEL_FILES or (
        area(module) in FAMILIES and module.endswith(".model") and module.count(".") == 2
    )


def violations(g: dict[str, list[tuple[str, int, bool]]]) -> list[str]:
    out = []
    for module, edges in sorted(g.items()):
        here = area(module)
        for target, line, local in edges:
            there = area(target)
            where = f"{module}:{line} imports {target}"
            if target == "zoo.cli":
                out.append(f"{where}: nothing imports the CLI")
            if here in CORE and there not in CORE and target != "zoo":
                out.append(f"{where}: the core imports no family or entry module")
            same_model = is_model_file(target) and there == here  # the model in parts
            if is_model_file(module) and there != "zoo.nn" and not same_model:
                out.append(f"{where}: a model file imports only zoo.nn")
            if here in FAMILIES and there in FAMILIES + ENTRY and there != here:
                if there not in BUILDS_ON.get(here, ()):
                    out.append(f"{where}: {here} may import the core and {BUILDS_ON.get(here)}")
            if local:
                out.append(f"{where} inside a function: import it at the top of the module")
    out += [f"import circle: {' -> '.join(c)}" for c in circles(g)]
    return out


def circles(g: dict[str, list[tuple[str, int, bool]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), plus self-imports."""
    edges = {m: sorted({t for t, _, _ in e if t in g and t != m}) for m, e in g.items()}
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = itertools.count()

    def visit(v):
        index[v] = low[v] = next(counter)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def with_module(name: str, source: str) -> dict[str, list[tuple[str, int, bool]]]:
    sources = real_sources()
    sources[name] = (source, False)
    return graph(sources)


def test_the_real_tree_keeps_every_rule():
    g = graph(real_sources())
    assert len(g) > 50, "the walk found too few modules"
    assert violations(g) == []


@pytest.mark.parametrize(
    "name,source,expected",
    [
        ("zoo.train.bad", "from zoo.mbart import model\n", "the core imports no family"),
        ("zoo.data.bad", "import zoo.tasks\n", "the core imports no family or entry module"),
        ("zoo.peptide.model", "from zoo.io import modeldir\n", "a model file imports only zoo.nn"),
        ("zoo.zett.hypernet", "from zoo.mbart.model import MBart\n", "a model file imports only"),
        ("zoo.mbart.bad", "from zoo import cli\n", "nothing imports the CLI"),
        ("zoo.peptide.bad", "from zoo.mbart import tokenizer\n", "zoo.peptide may import"),
        ("zoo.zett.bad", "from zoo.tasks import get_task\n", "zoo.zett may import"),
        ("zoo.mbart.bad", "def f():\n    from zoo.io import modeldir\n", "inside a function"),
    ],
)
def test_each_rule_catches_a_synthetic_offender(name, source, expected):
    found = violations(with_module(name, source))
    assert any(expected in v and name in v for v in found), found


def test_an_import_circle_is_caught():
    sources = real_sources()
    sources["zoo.mbart.ring_a"] = ("from zoo.mbart import ring_b\n", False)
    sources["zoo.mbart.ring_b"] = ("from zoo.mbart.ring_a import x\n", False)
    found = violations(graph(sources))
    assert "import circle: zoo.mbart.ring_a -> zoo.mbart.ring_b" in found, found


def test_a_family_may_import_a_family_it_builds_on():
    assert (
        violations(with_module("zoo.zett.ok", "from zoo.mbart.tasks import TranslationTask\n"))
        == []
    )


def test_importing_the_cli_starts_no_jax_backend():
    """A multi-process run calls jax.distributed.initialize() after importing zoo.cli, which
    JAX refuses once a backend exists: no module may touch devices at import time (e.g. a
    jit decorator whose options ask for jax.default_backend())."""
    code = (
        "import zoo.cli\n"
        "from jax._src import xla_bridge\n"
        "assert not xla_bridge.backends_are_initialized(), 'a backend started at import'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
