"""Sizes shown to people are in IEC units (KiB, MiB, GiB), as the config and units.human_size
speak of them: no "40 MB" next to a "38.1 MiB" for the same kind of number.

A vendor's limit may be quoted as the vendor states it, only with its IEC value beside it in
parentheses, and that value must be right: "40 MB (38.1 MiB)"."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from smtp_offload.units import human_size
from tests.support.env import ROOT

DECIMAL = re.compile(r"\b(\d+(?:[.,]\d+)?)\s?(KB|kB|MB|GB)\b")
QUOTED = re.compile(r"\s?\((?:about |~)?([\d.]+ (?:KiB|MiB|GiB))\)")  # what must follow a quoted decimal size
FACTOR = {"KB": 1000, "kB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3}


def _shown_strings(path: Path) -> list[str]:
    """A module's string literals but its docstrings: what it can print, log or answer."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def _shipped() -> dict[str, list[str]]:
    """Text shipped to people: the package's strings, templates, pages and API description, the
    README, the example config (its comments are read by the admin) and the deploy guides."""
    package = ROOT / "smtp_offload"
    texts = {str(p.relative_to(ROOT)): _shown_strings(p) for p in package.rglob("*.py")}
    for pattern in ("*.j2", "*.html", "*.json", "*.txt"):
        texts.update({str(p.relative_to(ROOT)): [p.read_text()] for p in package.rglob(pattern)})
    docs = [ROOT / "README.md", *sorted((ROOT / "config").glob("*.toml")), *sorted((ROOT / "deploy").rglob("*.md"))]
    for p in docs:
        texts[str(p.relative_to(ROOT))] = [p.read_text()]
    return texts


def _problems(text: str) -> list[str]:
    found = []
    for m in DECIMAL.finditer(text):
        quoted = QUOTED.match(text, m.end())
        context = " ".join(text[max(0, m.start() - 40):m.end() + 20].split())
        if quoted is None:
            found.append(f"{m.group(0)!r} in …{context}…")
        else:
            exact = human_size(int(float(m.group(1).replace(",", ".")) * FACTOR[m.group(2)]))
            if quoted.group(1) != exact:
                found.append(f"{m.group(0)} is {exact}, not {quoted.group(1)}: …{context}…")
    return found


def test_shipped_text_speaks_iec_units():
    texts = _shipped()
    assert "smtp_offload/cli.py" in texts and "README.md" in texts and len(texts) > 50
    problems = [f"{name}: {p}" for name, strings in texts.items() for s in strings for p in _problems(s)]
    assert not problems, "decimal size units shown to people (use units.human_size, KiB/MiB/GiB):\n" + \
        "\n".join(problems)


def test_the_check_finds_decimal_units_and_wrong_quotes():
    assert _problems('print(f"sent {n} files, 30 MB in all")')
    assert _problems("Genesys: about 40 MB (40 MiB)")  # a wrong IEC value beside the vendor's
    assert not _problems("Genesys: about 40 MB (38.1 MiB); files up to 25.0 MiB")
    assert _shown_strings(Path(__file__)) and "30 MB in all" in " ".join(_shown_strings(Path(__file__)))
