"""The documentation lists what the code has: recon methods, pipelines, stages, packages."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

from mrirecon import recon
from mrirecon.pipeline.definitions import shipped_pipelines

from tests.helpers import ROOT, imported_modules



def _literals(text: str) -> set[str]:
    return set(re.findall(r"``([a-z0-9_]+)``", text))


def test_recon_run_docstring_lists_every_method():
    doc = recon.run.__doc__.split("y\n")[0]
    assert _literals(doc) >= set(recon.available())


def test_readme_pipeline_table_lists_every_shipped_pipeline():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Pipelines", 1)[1].split("\n## ", 1)[0]
    missing = [p for p in shipped_pipelines() if f"`{p}`" not in section]
    assert not missing, f"README's pipeline table lacks {missing}"


def test_architecture_table_names_every_package():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
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
    # io for io.errors' DataFormatError alone (a file's stated dose)
    "sampling": {"core", "operators", "containers", "io", "threads", "lazy", "mpl"},
    # the middle rows (each may also import core, threads, lazy, mpl: the table's note)
    "calib": {"core", "functional", "operators", "threads", "lazy", "mpl"},
    "solvers": {"core", "threads", "lazy", "mpl"},
    "metrics": {"core", "functional", "threads", "lazy", "mpl"},
    "viz": {"core", "functional", "threads", "lazy", "mpl"},
    "io": {"core", "containers", "functional", "operators", "threads", "lazy", "mpl"},
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
    # training imports recon (radial maps): recon importing it back made a cycle
    "recon": {"data", "training", "pipeline", "bench", "heldout", "cli", "cli_train"},
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
    text = (ROOT / "docs" / "robustness.md").read_text(encoding="utf-8")
    cited = re.findall(r"`(test_[a-z0-9_]+\.py)::(test_[A-Za-z0-9_]+)", text)
    assert len(cited) > 50  # the pattern still matches how rows cite tests
    sources: dict[str, str] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        sources[path.name] = sources.get(path.name, "") + path.read_text(encoding="utf-8")
    missing = sorted({(f, t) for f, t in cited
                      if not re.search(rf"def {t}\b", sources.get(f, ""))})
    assert not missing, f"docs/robustness.md cites tests that do not exist: {missing}"


#: Backticked names in the docs that look like code but are model-card or config keys.
_CARD_KEYS = {"training.config.optim.max_steps", "training.validation.baseline",
               "training.config.data.maps", "training.config.data.ct_photons"}


def _code_name_resolves(token: str) -> bool | None:
    """Whether a backticked code name of mrirecon exists: ``pkg/module.py`` (a file),
    ``pkg/module.py::name`` or dotted ``pkg.module.name`` (an attribute chain of that module);
    ``None`` for a token that is not such a name (a card key, a data path)."""
    subpackages = {p.name for p in (ROOT / "mrirecon").iterdir() if (p / "__init__.py").exists()}
    token = token.removesuffix("()").removeprefix("mrirecon/").removeprefix("mrirecon.")
    path, _, attrs = token.partition("::")
    if path.endswith(".py"):
        if path.split("/")[0] not in subpackages:
            return None
        if not (ROOT / "mrirecon" / path).is_file():
            return False
        module = "mrirecon." + path[:-3].replace("/", ".")
        names = attrs.split(".") if attrs else []
    else:
        parts = path.split(".")
        if "/" in path or len(parts) < 3 or parts[0] not in subpackages or token in _CARD_KEYS:
            return None
        module, names = f"mrirecon.{parts[0]}.{parts[1]}", parts[2:]
        if importlib.util.find_spec(module) is None:
            return None
    obj = importlib.import_module(module)
    for name in names:
        if not hasattr(obj, name):
            return False
        obj = getattr(obj, name)
    return True


def test_code_names_the_docs_give_exist():
    """The functions, modules and files that docs/robustness.md and the READMEs name in backticks
    as where a behaviour lives exist under those names (a rename left rows naming
    ``pipeline.volume._without_blank_reference_slices``). docs/architecture.md is left out: its
    tables name where code used to be."""
    checked, missing = 0, []
    for doc in ("docs/robustness.md", "README.md", "benchmarks/README.md",
                "mrirecon/weights/README.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        for token in set(re.findall(r"`([A-Za-z_]\w*(?:(?:\.py::|::|[./])[A-Za-z_]\w*)+"
                                    r"(?:\.py)?(?:\(\))?)`", text)):
            found = _code_name_resolves(token)
            checked += found is not None
            if found is False:
                missing.append(f"{doc}: {token}")
    assert checked > 100  # the pattern still matches how the docs name code
    assert not missing, f"the docs name code that does not exist: {sorted(missing)}"


def _documented_parameters(doc: str) -> list[str]:
    """The names of the entries of a numpydoc ``Parameters`` section (``a, b : type`` entries
    give both names); ``[]`` without one."""
    lines = inspect.cleandoc(doc or "").splitlines()
    names: list[str] = []
    for i, line in enumerate(lines[:-1]):
        if line.strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"}:
            for j in range(i + 2, len(lines)):
                entry = lines[j]
                if j + 1 < len(lines) and set(lines[j + 1].strip()) == {"-"}:
                    break  # the next section's title
                if entry.strip() and not entry[0].isspace():
                    spec = entry.split(" : ")[0]
                    names += [n.strip().strip("`").lstrip("*") for n in spec.split(",")]
    return names


#: callables whose Parameters section must list every parameter of the signature (extend it)
_FULLY_DOCUMENTED = [
    "mrirecon.training.trainer.Trainer",
    "mrirecon.training.data_acquired.AcquiredMRISet",
    "mrirecon.data.simulate_mri.simulate_mri_volume",
    "mrirecon.data.simulate_ct.simulate_ct_samples",
    "mrirecon.io.lodopab.write_lodopab",
    "mrirecon.models.registry.card_params",
    "mrirecon.models.unrolled.unrolled_em.UnrolledEM",
]


@pytest.mark.parametrize("dotted", _FULLY_DOCUMENTED)
def test_parameters_section_has_an_entry_for_every_parameter(dotted):
    """A parameter named only in the first line or inside another entry's text (``Trainer``
    said "validate on ``val_set``", a parameter it does not have) is not documented: each one
    of the signature (not ``self``, ``*args``, ``**kwargs``) has its own entry."""
    module, _, name = dotted.rpartition(".")
    obj = getattr(importlib.import_module(module), name)
    documented = _documented_parameters(obj.__doc__)
    assert documented, f"{dotted}: no numpydoc Parameters section found"
    wanted = [p.name for p in inspect.signature(obj).parameters.values()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    missing = [n for n in wanted if n not in documented]
    assert not missing, f"{dotted}'s docstring has no Parameters entry for {missing}"
    unknown = [n for n in documented if n not in wanted]
    assert not unknown, f"{dotted}'s docstring documents {unknown}, not in its signature"
    summary = inspect.cleandoc(obj.__doc__).splitlines()[0]
    unknown = [n for n in re.findall(r"``([a-z_][a-z0-9_]*)``", summary) if n not in wanted]
    assert not unknown, f"{dotted}'s first line names {unknown}, not in its signature"
