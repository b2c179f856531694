"""PyTorch → ExecuTorch: one ``.pte`` program with the XNNPACK delegate, FP32 or INT8.

ExecuTorch is PyTorch's on-device runtime (Android, iOS, embedded); a ``.pte`` file is its
serialized program. The conversion follows ExecuTorch's XNNPACK backend guide:
``torch.export.export`` → ``executorch.exir.to_edge_transform_and_lower`` with the
``XnnpackPartitioner`` (every supported subgraph becomes an XNNPACK delegate blob, the rest
runs on ExecuTorch's portable kernels) → ``to_executorch()``.

INT8 is PyTorch's PT2E static quantization with ExecuTorch's ``XNNPACKQuantizer``
(``torchao.quantization.pt2e``: ``prepare_pt2e`` → run calibration batches → ``convert_pt2e``):
weights int8 symmetric per output channel, activations int8 asymmetric per tensor, the scheme
XNNPACK's quantized operators take. The calibration batches are the model's own views of
``--calib`` images, the same inputs the ONNX/TensorRT/CoreML INT8 exports
calibrate on; ranges are min/max (``--calib-method minmax``).

Metadata lives *inside* the program: ExecuTorch stores ``constant_methods`` (methods that
return a constant) in the ``.pte``, so the model config, preprocessing and export settings are
three string methods (:data:`METADATA_METHODS`) an app reads with ``Module.execute(name)``,
the same keys as ONNX ``metadata_props`` (:mod:`export.metadata`).

Shapes: the batch axis is dynamic up to :data:`MAX_BATCH` (ExecuTorch plans memory for the
upper bound; the runner feeds larger batches in chunks). ``full`` views (native pixels,
dynamic H×W in ONNX) are fixed here at the config's ``source_size``: a phone program with a
16384² upper bound would plan gigabytes. Burst models are refused (one line): their (B, T)
dynamic program has not been lowered and checked with ExecuTorch here yet.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.model import example_inputs
from edge_iqa.outputs import atomic_write
from export.metadata import CONFIG_KEY, EXPORT_KEY, PREPROCESSING_KEY, artifact_metadata

MAX_BATCH = 8
EXAMPLE_BATCH = 2  # torch.export specialises a dimension traced at size 0 or 1
DELEGATE = "XnnpackBackend"
# metadata key -> name of the constant method holding it (method names are identifiers)
METADATA_METHODS = {CONFIG_KEY: "edge_iqa_config", PREPROCESSING_KEY: "edge_iqa_preprocessing",
                    EXPORT_KEY: "edge_iqa_export"}
INSTALL_HINT = "pip install edge-iqa[executorch]"


def executorch_missing() -> str | None:
    """None when the ExecuTorch exporter imports here, else one line saying how to get it."""
    try:
        import executorch.exir  # noqa: F401
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
            XnnpackPartitioner,  # noqa: F401
        )
    except Exception as err:  # ImportError, or a torch the wheel was not built for
        return f"ExecuTorch export needs the executorch package ({type(err).__name__}: {err}); {INSTALL_HINT}"
    return None


def torch2pte(model, path: str | Path, *, precision: str = "fp32",
              calibration: Iterable[Sequence[torch.Tensor]] | None = None,
              export: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` (an :class:`~edge_iqa.model.IQAModel`, eval, CPU, FP32) as the ``.pte`` ``path``.

    ``precision`` ``int8`` needs ``calibration``: batches of view tensors, one tuple per batch.
    ``export``: settings stored in the program's ``edge_iqa_export`` method. Returns facts about
    the program (delegated node counts, MACs of the exported graph, bytes).
    """
    missing = executorch_missing()
    if missing:
        raise EdgeIQAError(missing)
    if precision not in ("fp32", "int8"):
        raise EdgeIQAError(f"ExecuTorch export takes --precision fp32 or int8, got {precision}")
    config: ModelConfig = model.config
    refuse_burst(config)
    path = Path(path)
    net = model.float().cpu().eval()
    inputs = example_inputs(config, batch=EXAMPLE_BATCH)
    shapes = dynamic_shapes(config)
    info: dict[str, Any] = {"max_batch": MAX_BATCH}
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        seconds[stage] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()

    with _quiet():
        program = _export(net, inputs, shapes, config)
        lap("torch_export")
        info["exported_program_macs"] = exported_macs(program, config)
        lap("macs")
        if precision == "int8":
            if calibration is None:
                raise EdgeIQAError("INT8 ExecuTorch export calibrates on real images; pass --calib DATA")
            quantized, info["calib_batches"], info["calib_images"] = quantize_pt2e(program, calibration)
            lap("pt2e_calibrate_convert")
            program = _export(quantized, inputs, shapes[0], config)  # the converted graph takes the views flat
            lap("torch_export_quantized")
        settings = {"format": "executorch", "precision": precision, "delegate": DELEGATE,
                    "max_batch": MAX_BATCH, "exporter": f"executorch {_version()} (torch {torch.__version__})",
                    **dict(export or {})}
        if any(v.kind == "full" for v in config.views):
            settings["full_views"] = f"fixed at the source size {list(config.source_size)}"
        metadata = {METADATA_METHODS[k]: v for k, v in artifact_metadata(config, settings).items()}
        buffer, info["delegation"] = _lower(program, metadata, config)
        lap("xnnpack_lower")
    atomic_write(path, lambda handle: handle.write(buffer), binary=True)
    info["seconds"] = seconds
    info["pte_bytes"] = path.stat().st_size
    return info


def refuse_burst(config: ModelConfig) -> None:
    if config.burst is not None:
        raise EdgeIQAError(f"{config.name!r} is a burst model: ExecuTorch export takes photo models only for now "
                           "(the (B, T) burst program is not lowered and checked yet); export it --format onnx, "
                           "tensorrt or coreml")


def dynamic_shapes(config: ModelConfig):
    """torch.export dynamic shapes: the batch axis of every view, 1..MAX_BATCH."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    return (tuple({0: batch} for _ in config.views),)  # forward(*views): one argument holding every view


def _export(net, inputs, shapes, config: ModelConfig):
    try:
        with torch.no_grad():
            return torch.export.export(net, inputs, dynamic_shapes=shapes, strict=False)
    except Exception as err:  # torch.export raises many types; name the model and keep one line
        raise EdgeIQAError(f"ExecuTorch export of {config.name!r} failed in torch.export: {_first_line(err)}") from err


def quantize_pt2e(program, calibration: Iterable[Sequence[torch.Tensor]]):
    """PT2E static INT8 for XNNPACK: observers from the XNNPACKQuantizer, min/max over the calibration
    batches, then the quantize/dequantize graph XNNPACK lowers to int8 kernels."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import MinMaxObserver
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import QuantizationConfig, QuantizationSpec

    base = get_symmetric_quantization_config(is_per_channel=True)
    activation = base.input_activation
    minmax = QuantizationSpec(dtype=activation.dtype, quant_min=activation.quant_min, quant_max=activation.quant_max,
                              qscheme=activation.qscheme, is_dynamic=False,
                              observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    scheme = QuantizationConfig(minmax, minmax, base.weight, base.bias, base.is_qat)
    prepared = prepare_pt2e(program.module(), XNNPACKQuantizer().set_global(scheme))
    batches = images = 0
    with torch.no_grad():
        for views in calibration:
            prepared(*views)
            batches += 1
            images += int(views[0].shape[0])
    if not batches:
        raise EdgeIQAError("no calibration batch could be read for the INT8 ExecuTorch export")
    return convert_pt2e(prepared), batches, images


def exported_macs(program, config: ModelConfig) -> int:
    """MACs of the exported graph (what is lowered) at batch 1, counted like :func:`profiling.macs.count_macs`."""
    from profiling.macs import count_macs

    return count_macs(program.module(), example_inputs(config, batch=1)).total


def _lower(program, metadata: dict[str, str], config: ModelConfig):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
        XnnpackPartitioner,
    )
    from executorch.exir import to_edge_transform_and_lower

    try:
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()], constant_methods=metadata)
        delegation = delegation_summary(edge.exported_program().graph_module)
        return edge.to_executorch().buffer, delegation
    except EdgeIQAError:
        raise
    except Exception as err:
        raise EdgeIQAError(f"ExecuTorch lowering of {config.name!r} to XNNPACK failed: {_first_line(err)}") from err


def delegation_summary(graph_module) -> dict[str, Any]:
    """How much of the program XNNPACK runs: delegate calls, and the ops left on portable kernels."""
    from executorch.devtools.backend_debug import get_delegation_info

    delegation = get_delegation_info(graph_module)
    undelegated = {op: int(row.non_delegated) for op, row in sorted(delegation.delegation_by_operator.items())
                   if row.non_delegated}
    return {"delegated_nodes": int(delegation.num_delegated_nodes),
            "undelegated_nodes": int(delegation.num_non_delegated_nodes),
            "delegate_calls": int(delegation.num_delegated_subgraphs), "undelegated_ops": undelegated}


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("executorch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextlib.contextmanager
def _quiet():
    """torch.export and the lowering passes log and warn a lot; keep the CLI's output to its own lines."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._dynamo", "executorch", "torchao", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
