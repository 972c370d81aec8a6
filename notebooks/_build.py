"""Regenerate the research notebooks from their Python sources (outputs stripped).

Each notebook ``notebooks/NN_name.ipynb`` is built from ``notebooks/src/NN_name.py``, a plain
Python script in the "percent" format: ``# %%`` starts a code cell, ``# %% [markdown]`` starts
a Markdown cell whose lines are comments (``# text``). The sources run as scripts too
(``python notebooks/src/01_physics_and_classical_recon.py``).

Usage::

    python notebooks/_build.py           # rewrite every .ipynb from its source
    python notebooks/_build.py --check   # exit 1 if a committed .ipynb differs from its source

The output is deterministic (fixed cell ids, sorted JSON keys, no outputs, no execution
counts), so ``tests/test_notebooks.py`` can compare the committed files with this script's
output byte for byte.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SOURCE_DIR = HERE / "src"
MARKDOWN, CODE = "markdown", "code"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def source_files() -> list[Path]:
    """The notebook sources ``notebooks/src/NN_*.py`` in name order."""
    return sorted(p for p in SOURCE_DIR.glob("[0-9][0-9]_*.py"))


def notebook_path(source: Path) -> Path:
    """``notebooks/src/NN_name.py`` -> ``notebooks/NN_name.ipynb``."""
    return HERE / (source.stem + ".ipynb")


def _strip_blank(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def parse_cells(text: str, name: str = "<source>") -> list[tuple[str, str]]:
    """Split a percent-format script into ``(kind, source)`` cells.

    Lines before the first ``# %%`` marker (e.g. a module docstring) are dropped. Markdown
    lines must be comments: ``# text`` becomes ``text`` and a lone ``#`` an empty line.

    Raises
    ------
    ValueError
        A Markdown line that is not a comment, or an empty cell (the message names the source
        and the line).
    """
    cells: list[tuple[str, list[str], int]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        marker = line.strip()
        if marker.startswith("# %%"):
            rest = marker[4:].strip()
            if rest not in ("", "[markdown]"):
                raise ValueError(f"{name}:{number}: unknown cell marker {line!r} (use '# %%' or '# %% [markdown]')")
            cells.append((MARKDOWN if rest else CODE, [], number))
            continue
        if not cells:
            continue
        kind, lines, _ = cells[-1]
        if kind == MARKDOWN:
            if line.strip() and not line.startswith("#"):
                raise ValueError(f"{name}:{number}: Markdown cell lines must start with '#', got {line!r}")
            line = line[2:] if line.startswith("# ") else line[1:]
        lines.append(line.rstrip())
    out = []
    for kind, lines, number in cells:
        body = _strip_blank(lines)
        if not body:
            raise ValueError(f"{name}:{number}: empty {kind} cell")
        out.append((kind, "\n".join(body)))
    return out


def build_notebook(source: Path) -> str:
    """The ``.ipynb`` JSON text for ``source`` (nbformat 4.5, no outputs, fixed cell ids)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": dict(KERNELSPEC),
        "language_info": {"name": "python", "pygments_lexer": "ipython3"},
    }
    for i, (kind, text) in enumerate(parse_cells(source.read_text(), source.name)):
        cell = nbformat.v4.new_markdown_cell(text) if kind == MARKDOWN else nbformat.v4.new_code_cell(text)
        cell.id = f"cell-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (default) or ``--check`` every notebook; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    stale = []
    for source in source_files():
        target, text = notebook_path(source), build_notebook(source)
        if check:
            if not target.is_file() or target.read_text() != text:
                stale.append(target.name)
        elif not target.is_file() or target.read_text() != text:
            target.write_text(text)
            print(f"wrote {target.relative_to(HERE.parent)}")
    if stale:
        print(f"out of date (run python notebooks/_build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
