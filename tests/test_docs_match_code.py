"""The documentation lists what the code has: recon methods, pipelines, stages, packages."""

from __future__ import annotations

import re

from mrirecon import recon
from mrirecon.pipeline.definitions import shipped_pipelines

from tests.helpers import ROOT, imported_modules



def _literals(text: str) -> set[str]:
    return set(re.findall(r"``([a-z0-9_]+)``", text))


def test_recon_run_docstring_lists_every_method():
    doc = recon.run.__doc__.split("y\n")[0]
    assert _literals(doc) >= set(recon.available())


def test_readme_pipeline_table_lists_every_shipped_pipeline():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Pipelines", 1)[1].split("\n## ", 1)[0]
    missing = [p for p in shipped_pipelines() if f"`{p}`" not in section]
    assert not missing, f"README's pipeline table lacks {missing}"


def test_architecture_table_names_every_package():
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## The picture", 1)[1].split("\n## ", 1)[0]
    pkg = ROOT / "mrirecon"
    packages = sorted(p.name for p in pkg.iterdir() if (p / "__init__.py").is_file())
    modules = sorted(p.stem for p in pkg.glob("*.py") if p.stem not in ("__init__", "__main__"))
    missing = [n for n in packages + modules if f"`{n}" not in table]
    assert not missing, f"docs/architecture.md's package table lacks {missing}"


# the bottom layers may import only these mrirecon packages (lazy imports count too) ...
ONLY = {
    "core": set(),
    "functional": {"core"},
    "operators": {"core", "functional"},
    "containers": {"core", "functional", "operators"},
    "lazy": set(),
}
# ... and the layers above must not import these
FORBIDDEN = {
    "io": {"data", "models", "recon", "training", "pipeline", "bench", "heldout", "cli",
           "cli_train"},
    "models": {"io", "data", "recon", "training", "pipeline", "bench", "heldout", "cli",
               "cli_train"},
    "solvers": {"io", "data", "models", "recon", "training", "pipeline", "bench", "heldout"},
    "training": {"pipeline", "bench", "heldout", "cli", "cli_train"},
    "data": {"models", "recon", "training", "pipeline", "bench", "heldout", "cli"},
    "pipeline": {"bench", "heldout", "cli", "cli_train"},
}


def _imports() -> dict[str, set[tuple[str, str]]]:
    pkg = ROOT / "mrirecon"
    edges: dict[str, set[tuple[str, str]]] = {}
    for f in pkg.rglob("*.py"):
        src = f.relative_to(pkg).parts[0].removesuffix(".py")
        for name in imported_modules(f):
            parts = name.split(".")
            if parts[0] == "mrirecon" and len(parts) > 1 and parts[1] != src:
                edges.setdefault(src, set()).add((parts[1], f.relative_to(ROOT).as_posix()))
    return edges


def test_layering_as_the_architecture_says():
    edges = _imports()
    bad = [f"{where} imports mrirecon.{dst}" for src, allowed in ONLY.items()
           for dst, where in edges.get(src, ()) if dst not in allowed]
    bad += [f"{where} imports mrirecon.{dst}" for src, forbidden in FORBIDDEN.items()
            for dst, where in edges.get(src, ()) if dst in forbidden]
    assert not bad, "\n".join(sorted(bad))


def test_robustness_rows_cite_tests_that_exist():
    """Every ``file.py::test_name`` that docs/robustness.md cites as a row's evidence is a test
    of that name in a file of that name under tests/ (a renamed test left a row citing nothing)."""
    text = (ROOT / "docs" / "robustness.md").read_text()
    cited = re.findall(r"`(test_[a-z0-9_]+\.py)::(test_[A-Za-z0-9_]+)", text)
    assert len(cited) > 50  # the pattern still matches how rows cite tests
    sources: dict[str, str] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        sources[path.name] = sources.get(path.name, "") + path.read_text()
    missing = sorted({(f, t) for f, t in cited
                      if not re.search(rf"def {t}\b", sources.get(f, ""))})
    assert not missing, f"docs/robustness.md cites tests that do not exist: {missing}"
