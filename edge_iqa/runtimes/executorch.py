"""ExecuTorch backend: ``.pte`` programs (XNNPACK delegate) in ExecuTorch's Python runtime.

``executorch.runtime.Runtime`` wraps the same C++ runtime and XNNPACK kernels an Android or
iOS app links, so a program scored here runs the code a phone runs (x86 kernels instead of
Arm ones). The program written by :mod:`export.executorch` carries its model config,
preprocessing and export settings as constant methods (``edge_iqa_config``, …); a ``.pte``
without them, or whose ``forward`` inputs do not match the config's views, is refused in one
line. The batch axis is bounded by the program's ``max_batch``: larger batches run in chunks.

ExecuTorch 1.5's Python runtime takes and returns ``torch.Tensor`` values, so this backend
imports torch (the runtime's own dependency); ``unavailable()`` says so when it is missing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.runtimes.base import Loaded, importable, package_version

NAME = "executorch"
SUFFIXES = (".pte",)
CONFIG_METHOD = "edge_iqa_config"
EXPORT_METHOD = "edge_iqa_export"
INSTALL_HINT = "pip install edge-iqa[executorch]"


def unavailable() -> str | None:
    if not importable("executorch"):
        return f"executorch is not installed ({INSTALL_HINT})"
    try:
        from executorch.runtime import Runtime

        if not Runtime.get().backend_registry.is_available("XnnpackBackend"):
            return "this executorch build has no XNNPACK backend"
    except Exception as err:  # a wheel built for another torch fails here, not at find_spec
        return f"executorch does not import ({type(err).__name__}: {str(err).strip().splitlines()[0]}; {INSTALL_HINT})"
    return None


def version() -> str:
    return package_version("executorch")


_FORWARD_LOADED = False  # set once a forward method (an XNNPACK runtime on the threadpool) exists here


def set_threads(threads: int) -> int:
    """Size ExecuTorch's process-wide threadpool, which XNNPACK runs on; 0 keeps its size (one
    thread per core). Returns the pool's size. The pool is resized only before the first forward
    method of the process is loaded: XNNPACK runtimes keep the pool they were created on, and
    resizing it under a loaded method hung or crashed (SIGSEGV, or glibc's
    ``__pthread_tpp_change_priority`` assertion) with executorch 1.5.1 here."""
    from executorch.extension.pybindings import portable_lib

    current = portable_lib._threadpool_get_thread_count()
    if threads and current != int(threads) and not _FORWARD_LOADED:
        portable_lib._unsafe_reset_threadpool(int(threads))
        current = portable_lib._threadpool_get_thread_count()
    return current


def read_program(path: str | Path):
    """The loaded ``Program``, or one line saying why the file is not one."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "This API is experimental" on import
        from executorch.runtime import Runtime

    try:
        return Runtime.get().load_program(Path(path))
    except Exception as err:  # the pybindings raise RuntimeError with the runtime's error code
        raise EdgeIQAError(f"{path}: ExecuTorch cannot load it as a program ({_first_line(err)}); "
                           "re-export it with `edge-iqa export --format executorch`") from None


def program_metadata(program, path: str | Path) -> dict[str, str]:
    """``{method name: JSON string}`` for every edge-iqa metadata method the program has."""
    found = {}
    for name in program.method_names:
        if not name.startswith("edge_iqa_"):
            continue
        try:
            value = program.load_method(name).execute([])
        except Exception as err:
            raise EdgeIQAError(f"{path}: its {name} method cannot run ({_first_line(err)}); re-export it") from None
        if len(value) != 1 or not isinstance(value[0], str):
            raise EdgeIQAError(f"{path}: its {name} method returns no string; not an edge-iqa export")
        found[name] = value[0]
    return found


def config_of_program(program, path: str | Path) -> ModelConfig:
    meta = program_metadata(program, path)
    if CONFIG_METHOD not in meta:
        raise EdgeIQAError(f"{path}: an ExecuTorch program without edge-iqa's model config ({CONFIG_METHOD} method); "
                           "score the .pte files `edge-iqa export --format executorch` writes")
    try:
        json.loads(meta[CONFIG_METHOD])
    except json.JSONDecodeError as err:
        raise EdgeIQAError(f"{path}: its {CONFIG_METHOD} is not JSON ({err}); re-export it") from None
    return ModelConfig.stored_in(path, meta[CONFIG_METHOD])


def max_batch_of(program, path: str | Path) -> int:
    meta = program_metadata(program, path)
    try:
        return int(json.loads(meta.get(EXPORT_METHOD, "{}")).get("max_batch", 1))
    except (json.JSONDecodeError, TypeError, ValueError):
        return 1


def check_inputs(method_meta, config: ModelConfig, path: str | Path) -> None:
    """``forward`` takes one float32 tensor per view of the view's shape: (N, 3, H, W), or
    (N, T, 3, H, W) for a burst model (N and T bounded; sizes are the upper bounds)."""
    if method_meta.num_inputs() != len(config.views):
        _mismatch(path, f"forward has {method_meta.num_inputs()} input(s), its config has {len(config.views)} view(s)")
    lead = 1 if config.burst is None else 2
    for i, view in enumerate(config.views):
        tensor = method_meta.input_tensor_meta(i)
        sizes = list(tensor.sizes())
        wanted = [3, *view.output_size(config.source_size)]
        if tensor.dtype() != 6:  # ScalarType::Float
            _mismatch(path, f"input {i} has ExecuTorch dtype {tensor.dtype()}, the view {view.spec()} gives float32")
        if len(sizes) != lead + 3 or sizes[lead:] != wanted:
            _mismatch(path, f"input {i} has shape {'x'.join(map(str, sizes))}, the view {view.spec()} gives "
                            f"{'N' if lead == 1 else 'NxT'}x{'x'.join(map(str, wanted))}")


def _mismatch(path: str | Path, problem: str) -> None:
    raise EdgeIQAError(f"{path}: not an edge-iqa export, its inputs do not match its edge_iqa_config "
                       f"({problem}); re-export it with `edge-iqa export --format executorch`")


def batch_fn(path: str | Path, threads: int = 0):
    """``(config, run)``: the program's model config and a Scorer batch function running ``forward``."""
    import torch

    program = read_program(path)
    config = config_of_program(program, path)
    if "forward" not in program.method_names:
        raise EdgeIQAError(f"{path}: the program has no forward method; not an edge-iqa export")
    pool = set_threads(threads)  # before load_method: the XNNPACK runtime is built on the pool
    method = program.load_method("forward")
    global _FORWARD_LOADED
    _FORWARD_LOADED = True
    check_inputs(method.metadata, config, path)
    chunk = max(1, max_batch_of(program, path))
    burst = config.burst is not None
    fixed = [view.output_size(config.source_size) for view in config.views]

    def run_chunk(views: Sequence[np.ndarray]) -> np.ndarray:
        tensors = []
        for view, size in zip(views, fixed):
            if tuple(view.shape[-2:]) != tuple(size):
                raise EdgeIQAError(f"{path}: this program takes {size[0]}x{size[1]} views, got "
                                   f"{view.shape[-2]}x{view.shape[-1]} (full views are fixed at the export's source size)")
            tensors.append(torch.from_numpy(np.ascontiguousarray(view, dtype=np.float32)))
        try:
            out = method.execute(tensors)[0]
        except Exception as err:
            raise EdgeIQAError(f"{path}: ExecuTorch forward failed ({_first_line(err)})") from None
        scores = out.detach().numpy().astype(np.float32, copy=True)
        return scores if burst else scores.reshape(-1)  # burst: (N, n_tasks, T)

    def run(views: Sequence[np.ndarray]) -> np.ndarray:
        n = len(views[0])
        return np.concatenate([run_chunk([v[i:i + chunk] for v in views]) for i in range(0, n, chunk)])

    run.threads = pool  # what XNNPACK runs on, for a benchmark to report
    return config, run


def load(path: str | Path, *, threads: int = 0, device: str = "cpu") -> Loaded:
    reason = unavailable()
    if reason:
        raise EdgeIQAError(f"{path}: {reason}")
    if device != "cpu":
        raise EdgeIQAError(f"{path}: ExecuTorch's XNNPACK programs run on the CPU; use device cpu, not {device!r}")
    config, run = batch_fn(path, threads)
    return Loaded(config, run, NAME, version(), "cpu (XNNPACK)", Path(path), threads)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
