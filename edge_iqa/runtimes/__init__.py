"""The runtime registry: every backend that can score an edge-iqa model, one module each.

``load_artifact(path)`` picks the backend by the file's suffix (:func:`runtime_for`) or by
name, checks it can run here, and returns a :class:`Loaded` (config + batch function +
runtime, version, device) that :class:`edge_iqa.scoring.Scorer`, ``edge-iqa evaluate``,
``export --check`` parity and ``edge-iqa bench`` all score through. Adding a backend is adding
one module with the interface of :mod:`edge_iqa.runtimes.base` and one line in
:data:`RUNTIMES`. Backend modules load lazily: importing this package imports no runtime, and
no backend but ``torch`` imports torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from edge_iqa.errors import EdgeIQAError
from edge_iqa.runtimes.base import CONFIG_KEY, BatchFn, Loaded

RUNTIMES: dict[str, str] = {
    "torch": "edge_iqa.runtimes.torch_eager",
    "onnxruntime": "edge_iqa.runtimes.onnxruntime",
    "openvino": "edge_iqa.runtimes.openvino",
    "tensorrt": "edge_iqa.runtimes.tensorrt",
    "coreml": "edge_iqa.runtimes.coreml",
    "executorch": "edge_iqa.runtimes.executorch",
}


def get_runtime(name: str) -> ModuleType:
    """The backend module registered as ``name``."""
    if name not in RUNTIMES:
        raise EdgeIQAError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
    return importlib.import_module(RUNTIMES[name])


def runtime_names() -> list[str]:
    """Registered runtimes whose module is present in this install."""
    import importlib.util

    return [name for name, module in RUNTIMES.items() if importlib.util.find_spec(module) is not None]


def runtime_for(path: str | Path) -> str:
    """The default runtime of a model file, by its suffix (``.onnx``: ONNX Runtime)."""
    suffix = Path(path).suffix.lower()
    for name in runtime_names():
        if suffix in get_runtime(name).SUFFIXES:
            return name
    known = sorted({s for n in runtime_names() for s in get_runtime(n).SUFFIXES})
    raise EdgeIQAError(f"{path}: unknown model file type; give a .pt checkpoint or an export "
                       f"({', '.join(s for s in known if s not in ('.pt', '.pth'))})")


def can_load(name: str, path: str | Path) -> bool:
    """Whether runtime ``name`` takes files like ``path`` (OpenVINO takes ``.onnx`` too)."""
    return Path(path).suffix.lower() in get_runtime(name).SUFFIXES


def load_artifact(path: str | Path, runtime: str | None = None, threads: int = 0, device: str = "cpu") -> Loaded:
    """Load a checkpoint or export in ``runtime`` (None: the file's default runtime).

    One ``EdgeIQAError`` line when the file is missing, is of a type the runtime does not take,
    or the runtime cannot run here (its ``unavailable()`` reason)."""
    path = Path(path)
    name = runtime or runtime_for(path)
    backend = get_runtime(name)
    if not path.exists():
        raise EdgeIQAError(f"{path}: file not found")
    if not can_load(name, path):
        raise EdgeIQAError(f"{path}: runtime {name} takes {', '.join(backend.SUFFIXES)} files, not "
                           f"{path.suffix or 'a file without suffix'}")
    if threads < 0:
        raise EdgeIQAError(f"threads must be 0 (the runtime's default) or more, got {threads}")
    return backend.load(path, threads=threads, device=device)


__all__ = ["CONFIG_KEY", "RUNTIMES", "BatchFn", "Loaded", "can_load", "get_runtime", "load_artifact",
           "runtime_for", "runtime_names"]
