"""The pubip package's layers (pubip/__init__.py): who may import whom, and no import cycle - imports under
TYPE_CHECKING count too: a circle a type checker needs is a circle a reader must follow."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "watchdog" / "pubip"
SHARED = {"pubip", "pubip.errors", "pubip.protocol", "pubip.membership", "pubip.secrets", "pubip.awx", "pubip.logs",
          "pubip.sdnotify", "pubip.yamlfile", "pubip._collection"}
# layer -> the layers it may import (its own included)
ALLOWED = {
    "shared": {"shared"},
    "node": {"shared", "node"},
    "controller": {"shared", "controller"},
    "cli": {"shared", "node", "controller", "cli", "lab"},
    "lab": {"shared", "lab"},
}


def module_name(path: Path, pkg: Path = PKG) -> str:
    rel = path.relative_to(pkg.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    if module in SHARED:
        return "shared"
    return module.split(".")[1]


def imports(pkg: Path = PKG) -> dict[str, set[str]]:
    """module -> the modules of PKG it imports (anywhere in the file: function bodies and TYPE_CHECKING blocks
    included)."""
    graph: dict[str, set[str]] = {}
    top = pkg.name
    modules = {module_name(p, pkg): p for p in pkg.rglob("*.py")}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found: set[str] = set()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith(top)}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith(top):
                    continue
                for alias in node.names:  # `from . import x` names a module when x is one
                    found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_every_module_is_in_a_known_layer() -> None:
    assert {layer(m) for m in imports()} <= set(ALLOWED)


def test_no_import_from_a_layer_it_may_not_use() -> None:
    wrong = sorted(f"{m} imports {t}" for m, targets in imports().items() for t in targets
                   if layer(t) not in ALLOWED[layer(m)])
    assert wrong == []


def test_only_the_cli_imports_the_lab() -> None:
    users = sorted(m for m, targets in imports().items() for t in targets
                   if layer(t) == "lab" and layer(m) not in ("lab", "cli"))
    assert users == []


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every import cycle of GRAPH, as "a -> b -> a"."""
    # a package's __init__ importing its own submodules (a facade) is not a cycle
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    found: list[str] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                found.append(" -> ".join([*path[path.index(t):], t]))
            elif t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    return found


def test_no_import_cycle() -> None:
    assert cycles(imports()) == []


def test_a_circle_through_type_checking_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "planted"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "root.py").write_text("from .part import Part\n")
    (pkg / "part.py").write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .root import Root\n")
    assert cycles(imports(pkg)) == ["planted.part -> planted.root -> planted.part"]


# A value that mirrors a file's schema, one field per documented key, is not a part with state.
SCHEMAS = {"pubip.node.config.Config": "the watchdog's YAML file, one field per key"}


def test_no_module_over_500_lines_and_no_class_over_25_attributes() -> None:
    long = sorted(f"{module_name(p)}: {n} lines" for p in PKG.rglob("*.py")
                  if (n := len(p.read_text().splitlines())) > 500)
    big = []
    for path in PKG.rglob("*.py"):
        for cls in [c for c in ast.walk(ast.parse(path.read_text())) if isinstance(c, ast.ClassDef)]:
            fields = {n.attr for n in ast.walk(cls) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                      and isinstance(n.value, ast.Name) and n.value.id == "self"}
            fields |= {s.target.id for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
            name = f"{module_name(path)}.{cls.name}"
            if len(fields) > 25 and name not in SCHEMAS:
                big.append(f"{name}: {len(fields)} attributes")
    assert long == [] and sorted(big) == []
