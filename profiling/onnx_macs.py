"""MACs of an exported ONNX graph, to check an export against its PyTorch model.

After ONNX shape inference every tensor has a static shape, and the MACs of the ops that
carry them follow from shapes alone (the same convention as :mod:`profiling.macs`):

- ``Conv``: output elements × (input channels / groups) × kernel area
  = prod(Y.shape) × prod(W.shape[1:]); depthwise and grouped convs included.
- ``ConvTranspose``: input elements × (output channels / groups) × kernel area
  = prod(X.shape) × prod(W.shape[1:]).
- ``Gemm``: M × N × K; ``MatMul``: output elements × K (numpy broadcasting).

A graph that holds other ops carrying MACs (quantized QOperator ops, Einsum, contrib
attention) is refused rather than under-counted. Exporter-fused BatchNorm changes nothing:
it folds into the conv weights, not into extra MACs.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from edge_iqa.errors import EdgeIQAError

COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_REFUSED_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "Einsum", "Attention",
    "MultiHeadAttention", "FusedConv", "FusedMatMul", "FusedGemm", "Scan", "Loop", "If",
})


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for info in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        dims = info.type.tensor_type.shape.dim
        if info.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(d.dim_value for d in dims)
    return shapes


def _fix_batch_dim(model: onnx.ModelProto, batch: int, frames: int | None = None) -> None:
    """Give a symbolic leading (batch) dimension of the graph inputs a value, and the frames axis
    (1) of a burst graph's (B, T, 3, H, W) inputs ``frames``; other symbols are an error."""
    initializers = {t.name for t in model.graph.initializer}
    for graph_input in model.graph.input:
        if graph_input.name in initializers:
            continue
        for axis, dim in enumerate(graph_input.type.tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                continue
            if axis == 1 and frames is not None and len(graph_input.type.tensor_type.shape.dim) == 5:
                dim.Clear()
                dim.dim_value = frames
                continue
            if axis != 0:
                raise EdgeIQAError(f"ONNX input {graph_input.name!r} has a dynamic dimension {axis} "
                                   f"({dim.dim_param or '?'}); export it with static height and width to count MACs")
            dim.Clear()
            dim.dim_value = batch


def _load(model_or_path: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(model_or_path)
        return model
    path = Path(model_or_path)
    if not path.is_file():
        raise EdgeIQAError(f"{path}: ONNX file not found")
    try:
        return onnx.load(str(path))
    except Exception as err:  # protobuf raises its own DecodeError types
        raise EdgeIQAError(f"{path}: not a readable ONNX model ({type(err).__name__})") from None


def _node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int:
    def shape(name: str) -> tuple[int, ...]:
        if name not in shapes:
            raise EdgeIQAError(f"ONNX node {node.name or node.op_type!r}: shape of {name!r} unknown after shape inference")
        return shapes[name]

    if node.op_type == "Conv":
        return math.prod(shape(node.output[0])) * math.prod(shape(node.input[1])[1:])
    if node.op_type == "ConvTranspose":
        return math.prod(shape(node.input[0])) * math.prod(shape(node.input[1])[1:])
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        a = shape(node.input[0])
        k = a[0] if trans_a else a[1]
        return math.prod(shape(node.output[0])) * k
    if node.op_type == "MatMul":
        return math.prod(shape(node.output[0])) * shape(node.input[0])[-1]
    return 0


def count_onnx_macs(model_or_path: onnx.ModelProto | str | Path, *, batch: int = 1, frames: int | None = None) -> int:
    """MACs of one run of an ONNX graph (a file or a loaded model); a symbolic batch dim is set to
    ``batch``, a burst graph's symbolic frames axis to ``frames``."""
    return sum(onnx_macs_by_node(model_or_path, batch=batch, frames=frames).values())


def onnx_macs_by_node(model_or_path: onnx.ModelProto | str | Path, *, batch: int = 1,
                      frames: int | None = None) -> dict[str, int]:
    """MACs of each counted node (Conv, Gemm, MatMul, …) of one run, by node name."""
    model = _load(model_or_path)
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    _fix_batch_dim(model, batch, frames)
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    refused = sorted({n.op_type for n in model.graph.node if n.op_type in _REFUSED_OPS})
    if refused:
        raise EdgeIQAError(f"ONNX graph holds ops whose MACs are not counted here ({', '.join(refused)}); "
                           f"count the float export instead")
    shapes = _static_shapes(model)
    return {node.name: _node_macs(node, shapes) for node in model.graph.node if node.op_type in COUNTED_OPS}


def torch2onnx_for_counting(model: nn.Module, inputs: tuple[torch.Tensor, ...], path: str | Path) -> Path:
    """A minimal one-file ONNX export (opset 17) whose only use is checking MACs.

    The deployable exporter lives in ``export/``. This one uses the TorchScript-based exporter
    (``dynamo=False``): at the sizes the tests use it is 3-8× faster than the torch.export-based
    one and gives the same Conv/Gemm/MatMul nodes (the tests count a torch.export graph too).
    PyTorch deprecates it; its warning is silenced here because the user asked for a count.
    """
    path = Path(path)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.eval(), tuple(inputs), str(path), dynamo=False, opset_version=17)
    return path


def count_export_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """MACs of the ONNX graph that ``model`` exports to for ``inputs`` (a temporary file)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return count_onnx_macs(torch2onnx_for_counting(model, inputs, Path(tmp) / "model.onnx"))
