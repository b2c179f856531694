"""PyTorch → ONNX: ``torch2onnx`` writes one self-contained ``.onnx`` file per model.

The graph comes from ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), with the
weights inside the file (``external_data=False``: a deployable artifact is one file), inputs
``view0..viewN`` (RGB [0, 1] NCHW, one per view), output ``score`` (B,), and a dynamic batch
axis. ``full`` views also get dynamic height and width, since they take native pixels.

A burst model (``config.burst``) follows the graph contract of :mod:`edge_iqa.burst_model`:
inputs (B, T, 3, H, W) per view with B and T dynamic (T from 2 to :data:`MAX_FRAMES`, frame 0
the reference), one output ``scores`` (B, n_tasks, T) from
:class:`~edge_iqa.burst_model.AllTaskScores`, task rows in ``config.burst.tasks`` order. The
example burst is B = 2, T = 4 (torch.export specialises a dimension traced at 0 or 1). The
wrapper's attribute (``model.``) is taken off the node scopes, so ``--float-layer`` names the
same module paths (``branches.0.stem``, ``head``) for photo and burst graphs.
The model config, preprocessing and export settings go into ``metadata_props``
(see :mod:`export.metadata`).

Tracing is the slow part of an export (torch.export's decompositions: seconds for a tiny
model, tens of seconds for a UHD student), and it is a pure function of the module's class,
weights, config and options. The last few traced graphs are kept in memory, keyed by a
SHA-256 of all of these, so a process that writes several precisions of one model (``bench``,
a format × precision matrix) traces it once; a changed weight or option is a new key.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections import OrderedDict
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.model import IQAModel, example_inputs
from edge_iqa.outputs import atomic_write
from export.metadata import artifact_metadata, input_names, output_name

DEFAULT_OPSET = 18
EXAMPLE_BATCH = 2  # torch.export specialises a dimension traced at size 0 or 1
EXAMPLE_FRAMES = 4  # frames of the example burst (same reason)
MAX_FRAMES = 64
SCOPE_KEY = "pkg.torch.onnx.name_scopes"
TRACE_CACHE_ENTRIES = 4  # traced graphs kept per process (serialized ModelProto bytes)
_TRACED: OrderedDict[str, bytes] = OrderedDict()


def torch2onnx(model: IQAModel, path: str | Path, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
               export: Mapping[str, Any] | None = None, node_scopes: bool = False) -> Path:
    """Export ``model`` (eval mode, CPU, FP32) to the single ONNX file ``path``.

    ``export`` is extra JSON metadata about the export (precision, tool versions, …) stored
    under ``edge_iqa.export`` next to the model config and preprocessing. ``node_scopes`` keeps
    the exporter's per-node debug metadata (PyTorch module scopes, stack traces), which
    ``--float-layer`` resolves module names with; deployable files drop it (~0.35 MB for a
    MobileNetV3-Small student).
    """
    config: ModelConfig = model.config
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    burst = config.burst is not None
    inputs = example_inputs(config, batch=EXAMPLE_BATCH if dynamic_batch else 1,
                            frames=EXAMPLE_FRAMES if burst else None)
    net = model
    if burst:
        from edge_iqa.burst_model import AllTaskScores

        net = model if isinstance(model, AllTaskScores) else AllTaskScores(model).eval()  # QAT passes it wrapped
    proto = _traced_proto(net, inputs, opset, dynamic_batch)
    settings = {"format": "onnx", "precision": "fp32", "opset": opset, "dynamic_batch": dynamic_batch,
                "exporter": f"torch.onnx dynamo (torch {torch.__version__})", **dict(export or {})}
    if burst:
        settings.update(frames=f"dynamic, 2..{MAX_FRAMES}", tasks=list(config.burst.tasks),
                        output={"scores": ["batch", "tasks", "frames"]})
    if burst:
        unwrap_scopes(proto, "model.")
    set_metadata(proto, artifact_metadata(config, settings))
    save_onnx(proto, path, node_scopes=node_scopes)
    return path


def _traced_proto(net, inputs, opset: int, dynamic_batch: bool):
    """The ONNX ModelProto of ``net`` (a fresh copy), traced once per key (see the module docstring)."""
    import onnx

    key = _trace_key(net, inputs, opset, dynamic_batch)
    if key not in _TRACED:
        program = _export_program(net, inputs, opset, _dynamic_shapes(net.config, dynamic_batch))
        _TRACED[key] = program.model_proto.SerializeToString()
        while len(_TRACED) > TRACE_CACHE_ENTRIES:
            _TRACED.popitem(last=False)
    _TRACED.move_to_end(key)
    return onnx.ModelProto.FromString(_TRACED[key])


def _trace_key(net, inputs, opset: int, dynamic_batch: bool) -> str:
    digest = hashlib.sha256()
    cls = type(net)
    header = [cls.__module__, cls.__qualname__, net.config.to_json(), opset, dynamic_batch, torch.__version__,
              [tuple(x.shape) for x in inputs]]
    digest.update(repr(header).encode())
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _dynamic_shapes(config: ModelConfig, dynamic_batch: bool):
    if not dynamic_batch and config.burst is None and all(v.kind != "full" for v in config.views):
        return None
    Dim = torch.export.Dim
    batch = Dim("batch", min=1, max=4096) if dynamic_batch else None
    burst = config.burst is not None
    lead = 2 if burst else 1  # (B, T, 3, H, W) for a burst: T is dynamic in every burst graph
    frames = Dim("frames", min=2, max=MAX_FRAMES) if burst else None
    shapes = []
    for i, view in enumerate(config.views):
        axes = {0: batch} if batch is not None else {}
        if frames is not None:
            axes[1] = frames
        if view.kind == "full":
            axes.update({lead + 1: Dim(f"height{i}", min=32, max=16384), lead + 2: Dim(f"width{i}", min=32, max=16384)})
        shapes.append(axes)
    return (tuple(shapes),)  # forward(*views): one positional argument holding every view


def _export_program(model, inputs, opset: int, dynamic_shapes):
    names = input_names(model.config)
    # The dynamo exporter prints progress lines and deprecation chatter; keep the CLI quiet.
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), _quiet_loggers():
            warnings.simplefilter("ignore")
            with torch.no_grad():
                return torch.onnx.export(
                    model, inputs, dynamo=True, external_data=False, opset_version=opset,
                    input_names=names, output_names=[output_name(model.config)], dynamic_shapes=dynamic_shapes,
                    optimize=True, verbose=False,
                )
    except Exception as err:  # torch.export raises many types; name the model and keep one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EdgeIQAError(f"ONNX export of {model.config.name!r} failed: {first}") from err


@contextlib.contextmanager
def _quiet_loggers():
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def unwrap_scopes(proto, prefix: str) -> None:
    """Take ``prefix`` off every PyTorch module scope in the nodes' debug metadata, in place."""
    import ast

    for node in proto.graph.node:
        for prop in node.metadata_props:
            if prop.key == SCOPE_KEY:
                scopes = ast.literal_eval(prop.value)
                prop.value = repr([s[len(prefix):] if s.startswith(prefix) else s for s in scopes])


def set_metadata(proto, metadata: Mapping[str, str]) -> None:
    """Replace ``metadata_props`` entries of an ``onnx.ModelProto`` with ``metadata``."""
    kept = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "edge-iqa"


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, without loading its weights."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def save_onnx(proto, path: str | Path, *, node_scopes: bool = False) -> Path:
    """Write ``proto`` as one file (weights inside); refuse models over protobuf's 2 GB limit.

    Per-node debug metadata of the exporter is dropped unless ``node_scopes``.
    """
    import onnx

    path = Path(path)
    if not node_scopes:
        strip_node_scopes(proto)
    if proto.ByteSize() >= 2**31:
        raise EdgeIQAError(f"{path}: model over 2 GB cannot be one ONNX file; export a smaller model")
    # to a temporary name, then renamed: a killed export never leaves half a model at ``path``
    return atomic_write(path, lambda handle: onnx.save_model(proto, handle, save_as_external_data=False), binary=True)


def strip_node_scopes(proto) -> None:
    """Drop the exporter's per-node debug metadata (module scopes, stack traces) in place."""
    for node in proto.graph.node:
        del node.metadata_props[:]
