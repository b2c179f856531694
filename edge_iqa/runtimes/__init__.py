"""The runtime registry: every backend that can score an edge-iqa model, one module each.

``load_artifact(path)`` picks the backend by name, or else the fastest that takes the file
and runs here (:func:`default_runtimes`: an ``.onnx`` on the CPU goes to OpenVINO where it is
installed and reads the graph, else to ONNX Runtime, the suffix's own, :func:`runtime_for`),
checks it can run here, and returns a :class:`Loaded` (config + batch function +
runtime, version, device) that :class:`edge_iqa.scoring.Scorer`, ``edge-iqa evaluate``,
``export --check`` parity and ``edge-iqa bench`` all score through. Adding a backend is adding
one module with the interface of :mod:`edge_iqa.runtimes.base` and one line in
:data:`RUNTIMES`. Backend modules load lazily: importing this package imports no runtime, and
no backend but ``torch`` imports torch.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType

from edge_iqa.errors import EdgeIQAError
from edge_iqa.runtimes.base import CONFIG_KEY, BatchFn, Loaded

log = logging.getLogger(__name__)

RUNTIMES: dict[str, str] = {
    "torch": "edge_iqa.runtimes.torch_eager",
    "onnxruntime": "edge_iqa.runtimes.onnxruntime",
    "openvino": "edge_iqa.runtimes.openvino",
    "tensorrt": "edge_iqa.runtimes.tensorrt",
    "coreml": "edge_iqa.runtimes.coreml",
    "executorch": "edge_iqa.runtimes.executorch",
}

# Faster runtimes to try before a suffix's own on the CPU, fastest first: OpenVINO ran the same
# .onnx faster than ONNX Runtime at FP32 and at QDQ INT8 (benchmarks/results/bench_cpu.md,
# bench_int8.md). It cannot read the QOperator INT8 layout (com.microsoft ops): those stay in ONNX Runtime.
CPU_FASTER: dict[str, tuple[str, ...]] = {".onnx": ("openvino",)}


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


def default_runtimes(path: str | Path, device: str = "cpu") -> list[str]:
    """The runtimes ``load_artifact`` tries for ``path`` when none is named, in order: the faster
    ones of :data:`CPU_FASTER` that are installed (CPU only), then the suffix's own."""
    own = runtime_for(path)
    faster = CPU_FASTER.get(Path(path).suffix.lower(), ()) if device == "cpu" else ()
    return [*(name for name in faster if get_runtime(name).unavailable() is None), own]


def can_load(name: str, path: str | Path) -> bool:
    """Whether runtime ``name`` takes files like ``path`` (OpenVINO takes ``.onnx`` too)."""
    return Path(path).suffix.lower() in get_runtime(name).SUFFIXES


def load_artifact(path: str | Path, runtime: str | None = None, threads: int = 0, device: str = "cpu") -> Loaded:
    """Load a checkpoint or export in ``runtime`` (None: the first of :func:`default_runtimes` that loads it).

    One ``EdgeIQAError`` line when the file is missing, is of a type the runtime does not take,
    or the runtime cannot run here (its ``unavailable()`` reason)."""
    path = Path(path)
    if not path.exists():
        raise EdgeIQAError(f"{path}: file not found")
    if threads < 0:
        raise EdgeIQAError(f"threads must be 0 (the runtime's default) or more, got {threads}")
    if runtime is None:
        *faster, runtime = default_runtimes(path, device)
        for name in faster:
            try:
                return load_artifact(path, name, threads, device)
            except EdgeIQAError as err:  # e.g. a QOperator graph OpenVINO cannot read
                log.info("%s; loading it in %s", err, runtime)
    name = runtime
    backend = get_runtime(name)
    if not can_load(name, path):
        raise EdgeIQAError(f"{path}: runtime {name} takes {', '.join(backend.SUFFIXES)} files, not "
                           f"{path.suffix or 'a file without suffix'}")
    return backend.load(path, threads=threads, device=device)


__all__ = ["CONFIG_KEY", "RUNTIMES", "BatchFn", "Loaded", "can_load", "default_runtimes", "get_runtime",
           "load_artifact", "runtime_for", "runtime_names"]
