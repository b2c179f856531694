"""Dependencies between the packages point one way (``DESIGN.md``, "Layout"):

    edge_iqa core  <-  distill, profiling  <-  export  <-  the CLI (edge_iqa.cli, edge_iqa.commands)

The core (models, views, data, runtimes, scoring) imports none of the other packages, so
scoring an exported model needs neither the training nor the export stack; no package imports
the CLI, so the CLI can import every package without a circle. Every import is counted,
including those inside functions, and so is a module path written as a string (the registries
import by name).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_iqa", "distill", "profiling", "export")
CLI = ("edge_iqa.cli", "edge_iqa.commands")
MODULE_PATH = re.compile(r"^(?:edge_iqa|distill|profiling|export)(?:\.\w+)*$")

# layer -> the layers it must never import
FORBIDDEN = {
    "core": ("distill", "profiling", "export", "cli"),
    "distill": ("profiling", "export", "cli"),
    "profiling": ("distill", "export", "cli"),
    "export": ("cli",),
    "cli": (),
}


def layer_of(module: str) -> str:
    if module in CLI or module.startswith(tuple(f"{c}." for c in CLI)):
        return "cli"
    top = module.split(".")[0]
    return "core" if top == "edge_iqa" else top


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute imports and dotted module names in string constants)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_PATH.match(node.value):
            names.add(node.value)
    return {n for n in names if n.split(".")[0] in PACKAGES}


SOURCES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_every_package_has_modules():
    found = {module_name(p).split(".")[0] for p in SOURCES}
    assert found == set(PACKAGES)
    assert any(layer_of(module_name(p)) == "cli" for p in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path):
    module = module_name(path)
    forbidden = FORBIDDEN[layer_of(module)]
    wrong = sorted(name for name in imported_modules(path) if layer_of(name) in forbidden)
    assert not wrong, f"{module} ({layer_of(module)}) imports {wrong}"


def test_every_command_lives_in_the_cli():
    from edge_iqa.cli import COMMANDS

    assert all(layer_of(module) == "cli" for _, module in COMMANDS)


def test_the_check_sees_a_lazy_import(tmp_path):
    """A function-level import and a registry string both count (the check cannot pass vacuously)."""
    source = tmp_path / "probe.py"
    source.write_text('def f():\n    from export.pipeline import export_model\n\nTABLE = {"x": "distill.trainer"}\n')
    assert imported_modules(source) >= {"export.pipeline", "distill.trainer"}
    assert layer_of("edge_iqa.commands.bench") == "cli" and layer_of("edge_iqa.scoring") == "core"
