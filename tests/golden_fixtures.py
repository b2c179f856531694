"""The golden export fixtures (``tests/fixtures/make_*.py``) as the export regression tests load them.

Each fixture script fixes a small trained model, the synthetic data it is checked on (rebuilt
in the test, identical by its manifest digest) and the golden metrics of every export. The
matrix tests (photo: ``test_export_matrix.py``, burst: ``test_burst_export.py``) share this
loading so the checks are the same for both.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture_module(name: str) -> ModuleType:
    """``tests/fixtures/<name>.py`` imported once (the scripts are not a package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def golden_of(module: ModuleType) -> dict:
    return json.loads(module.GOLDEN.read_text())


def rebuilt_data(module: ModuleType, folder: Path) -> Path:
    """The fixture's dataset built in ``folder``; fails when it is not the one golden was made on."""
    root = module.build_data(folder)
    if module.manifest_digest(root) != golden_of(module)["data"]["manifest_sha256"]:
        pytest.fail(f"the synthetic data built here differs from the one {module.GOLDEN.name} was made on "
                    f"(library versions?); run tests/fixtures/{module.__name__}.py --golden and review the diff")
    return root


def fixture_student(module: ModuleType):
    from edge_iqa.checkpoint import load_checkpoint

    model, _ = load_checkpoint(module.STUDENT)
    return model
