"""The shape of the code, checked: one-way imports, each SDK in one package, a thin SMTP
adapter, and policy values compared as values, never as strings, outside config."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from smtp_offload import config as config_mod

PACKAGE = Path(config_mod.__file__).parent


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level(tree: ast.Module):
    """Statements run at import time (not function bodies, not TYPE_CHECKING blocks)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            stack += node.body + node.orelse
        elif isinstance(node, ast.Try):
            stack += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]


def _resolve(name: str, node: ast.ImportFrom | ast.Import, alias: ast.alias) -> list[str]:
    """The smtp_offload modules one import statement loads."""
    is_pkg = MODULES[name].name == "__init__.py"
    if isinstance(node, ast.Import):
        targets = [alias.name]
    else:
        if node.level:
            base = name.split(".") if is_pkg else name.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        targets = [f"{mod}.{alias.name}", mod]
    out = []
    for t in targets:
        if t in MODULES:
            out.append(t)
            break
    return [m for m in out if m.startswith("smtp_offload")]


def imports(name: str, everywhere: bool = False) -> set[str]:
    tree = ast.parse(MODULES[name].read_text())
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))] if everywhere \
        else list(_top_level(tree))
    found = set()
    for node in nodes:
        for alias in node.names:
            found.update(_resolve(name, node, alias))
    found.discard(name)
    return found


def external(name: str) -> set[str]:
    """Top-level names of third-party packages a module imports anywhere (lazily too)."""
    tree = ast.parse(MODULES[name].read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_no_import_cycles():
    graph = {m: imports(m) for m in MODULES}
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            # A package importing its own submodules is how packages work, not a cycle.
            if len(scc) > 1 and not all(a.startswith(min(scc, key=len) + ".") or a == min(scc, key=len)
                                        for a in scc):
                cycles.append(sorted(scc))

    for m in graph:
        if m not in index:
            visit(m)
    assert cycles == []


@pytest.mark.parametrize("sdk, home", [
    ("aiosmtpd", "smtp_offload.smtp"), ("aiosmtplib", "smtp_offload.relay"), ("boto3", "smtp_offload.storage"),
    ("botocore", "smtp_offload.storage"), ("azure", "smtp_offload.storage.azure"), ("google", "smtp_offload.storage.gcs"),
])
def test_each_sdk_is_imported_in_one_package(sdk, home):
    users = sorted(m for m in MODULES if sdk in external(m))
    assert users and all(m == home or m.startswith(home + ".") for m in users), users


def test_the_smtp_handler_is_a_thin_adapter():
    outside = sorted(m for m in imports("smtp_offload.smtp.handler", everywhere=True)
                     if not m.startswith("smtp_offload.smtp"))
    assert len(outside) <= 4, outside
    assert "smtp_offload.delivery.pipeline" in outside


def _option_names() -> set[str]:
    names = set()

    def walk(cls) -> None:
        for key, (path, _f, hint) in config_mod.options(cls).items():
            if isinstance(hint, type) and issubclass(hint, __import__("enum").Enum):
                names.add(path[-1])
        for sub in config_mod.tables(cls).values():
            walk(sub)

    walk(config_mod.Config)
    return names


def test_no_policy_value_is_compared_as_a_string_outside_config():
    options = _option_names()
    assert {"on_empty", "on_tnef", "mode", "backend", "bare_newlines", "on_macros"} <= options
    found = []
    for name, path in MODULES.items():
        if name == "smtp_offload.config":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            named = any(isinstance(s, ast.Attribute) and s.attr in options for s in sides)
            strings = any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides) or any(
                isinstance(s, (ast.Tuple, ast.List, ast.Set)) and s.elts and
                all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in s.elts) for s in sides)
            if named and strings:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert found == []
