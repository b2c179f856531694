"""ONNX → TensorRT: ``onnx2trt`` builds an engine where ``tensorrt`` imports; elsewhere the
exporter writes the graph, checks it against TensorRT's rules and writes ``build_engine.sh``.

TensorRT's explicit quantization takes QDQ graphs only (QOperator ops such as QLinearConv are
not parsed): int8 zero points 0, activations per tensor, weights per output channel (opset ≥
13). TensorRT 10 builds them as strongly typed networks (``--stronglyTyped``); TensorRT 11
drops ``--int8/--fp16``, so QDQ is the lasting path (NVIDIA TensorRT developer guide, "Working
with Quantized Types"). :func:`check_tensorrt_graph` verifies those rules and the operator set
(onnx-tensorrt ``docs/operators.md``) on the graph itself, so a graph that TensorRT would
reject is caught on a machine without a GPU.

A burst graph ((B, T, 3, H, W) per view, ``scores`` (B, n_tasks, T) out; see
:mod:`edge_iqa.burst_model`) gets 5-D optimisation profiles: B from 1 to the max batch, T from
2 (a reference and one frame) to :data:`MAX_PROFILE_FRAMES`, optimised for the config's
``burst.frames``; DLA builds are static at batch 1 and ``burst.frames``.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.runtimes.tensorrt import DEFAULT_MAX_BATCH, read_sidecar, tensorrt_available  # noqa: F401  (runner: runtimes)
from export.metadata import input_names

MIN_OPSET = 13
MAX_OPSET = 20  # TensorRT 10 parses ONNX opsets up to 20 (onnx-tensorrt README)
MAX_PROFILE_FRAMES = 16  # the longest burst of the engine's profile (phones shoot 8-14 frames)

# ONNX ops the TensorRT ONNX parser supports (onnx-tensorrt docs/operators.md, TensorRT 8.5
# table, plus LayerNormalization and GroupNormalization added in TensorRT 8.6 / 10). Ops marked
# "N" there (QLinearConv, ConvInteger, DynamicQuantizeLinear, …) are absent on purpose.
TENSORRT_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil
Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
GridSample GroupNormalization GRU HardSigmoid HardSwish Identity If ImageScaler InstanceNormalization
IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool LRN
LSTM MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not
OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike
RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp
ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape
Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
WEIGHT_CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0, "MatMul": 1}


@dataclass
class TensorRTCheck:
    """What :func:`check_tensorrt_graph` found: errors make TensorRT reject or mis-build the graph."""

    opset: int
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    op_counts: dict[str, int] = field(default_factory=dict)
    quantized_weights: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "opset": self.opset, "errors": self.errors, "notes": self.notes,
                "op_counts": self.op_counts, "quantized_weights": self.quantized_weights}


def check_tensorrt_graph(onnx_path: str | Path, *, expect_int8: bool) -> TensorRTCheck:
    """Check an ONNX graph against TensorRT's explicit-quantization rules and operator set."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(onnx_path))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    report = TensorRTCheck(opset=opset)
    graph = proto.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(attr.t)
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:
        report.op_counts[node.op_type] = report.op_counts.get(node.op_type, 0) + 1

    if not MIN_OPSET <= opset <= MAX_OPSET:
        report.errors.append(f"opset {opset}: TensorRT 10 needs {MIN_OPSET} ≤ opset ≤ {MAX_OPSET} for per-channel QDQ")
    for op, count in sorted(report.op_counts.items()):
        if op not in TENSORRT_OPS:
            report.errors.append(f"{count}× {op}: not supported by the TensorRT ONNX parser")
    foreign = sorted({n.domain for n in graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        report.errors.append(f"ops from custom domains {foreign}: TensorRT needs standard ONNX ops")

    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            _check_qdq_node(node, consts, producers, consumers, report)
    n_q = report.op_counts.get("QuantizeLinear", 0)
    if expect_int8 and n_q == 0:
        report.errors.append("int8 requested but the graph has no QuantizeLinear: TensorRT would build it in float")
    if expect_int8:
        unquantized = [n.name for n in graph.node if n.op_type in ("Conv", "Gemm")
                       and not _input_from(n, 1, "DequantizeLinear", producers)]
        if unquantized:
            report.notes.append(f"{len(unquantized)} Conv/Gemm layer(s) stay in float (no Q/DQ on the weights): "
                                + ", ".join(unquantized[:5]) + (" …" if len(unquantized) > 5 else ""))
    return report


def _input_from(node, index: int, op_type: str, producers) -> bool:
    return len(node.input) > index and getattr(producers.get(node.input[index]), "op_type", None) == op_type


def _check_qdq_node(node, consts, producers, consumers, report: TensorRTCheck) -> None:
    name = node.name or node.output[0]
    scale_name = node.input[1] if len(node.input) > 1 else ""
    zero_name = node.input[2] if len(node.input) > 2 else ""
    if scale_name not in consts:
        report.errors.append(f"{node.op_type} {name}: scale is not a constant")
        return
    scale = np.asarray(consts[scale_name], dtype=np.float64)
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        report.errors.append(f"{node.op_type} {name}: scale must be finite and positive")
    if zero_name:
        if zero_name not in consts:
            report.errors.append(f"{node.op_type} {name}: zero point is not a constant")
        else:
            zero = consts[zero_name]
            if zero.dtype != np.int8:
                report.errors.append(f"{node.op_type} {name}: zero point is {zero.dtype}, TensorRT needs int8 (S8S8)")
            if np.any(zero != 0):
                report.errors.append(f"{node.op_type} {name}: zero point must be 0 (symmetric)")
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    is_weight = node.op_type == "DequantizeLinear" and node.input[0] in consts
    if node.op_type == "QuantizeLinear":
        users = consumers.get(node.output[0], [])
        if any(u.op_type != "DequantizeLinear" for u in users):
            report.errors.append(f"QuantizeLinear {name}: its output must feed DequantizeLinear only")
        if scale.size != 1:
            report.errors.append(f"QuantizeLinear {name}: activations must be quantized per tensor")
    elif is_weight:
        report.quantized_weights += 1
        weight = consts[node.input[0]]
        if weight.dtype != np.int8:
            report.errors.append(f"DequantizeLinear {name}: weight data is {weight.dtype}, TensorRT needs int8")
        for user in consumers.get(node.output[0], []):
            want = WEIGHT_CHANNEL_AXIS.get(user.op_type)
            if want is None:
                continue
            if user.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in user.attribute):
                want = 1
            if scale.size > 1 and (axis % weight.ndim) != want:
                report.errors.append(f"DequantizeLinear {name}: weights of {user.op_type} must be quantized "
                                     f"along the output-channel axis {want}, got axis {axis}")
            if scale.size > 1 and scale.size != weight.shape[want]:
                report.errors.append(f"DequantizeLinear {name}: {scale.size} scales for {weight.shape[want]} channels")
    elif scale.size != 1:
        report.errors.append(f"DequantizeLinear {name}: activations must be dequantized per tensor")
    if node.op_type == "DequantizeLinear" and not is_weight:
        source = producers.get(node.input[0])
        if source is None or source.op_type != "QuantizeLinear":
            report.errors.append(f"DequantizeLinear {name}: input must come from QuantizeLinear or int8 weights")


# --------------------------------------------------------------------------- engine build


def _shape_ranges(config: ModelConfig, max_batch: int, dynamic_batch: bool = True) -> list[tuple[str, tuple, tuple, tuple]]:
    """(input name, min, opt, max) shapes; full views are fixed at the config's source size.

    A burst model's inputs are (B, T, 3, H, W): T from 2 to :data:`MAX_PROFILE_FRAMES`, optimised
    at ``burst.frames`` (static at ``burst.frames`` without a dynamic batch, for DLA).
    """
    ranges = []
    for name, view in zip(input_names(config), config.views):
        h, w = view.output_size(config.source_size)
        low, high = (1, max_batch) if dynamic_batch else (1, 1)
        if config.burst is None:
            ranges.append((name, (low, 3, h, w), (1, 3, h, w), (high, 3, h, w)))
            continue
        t = config.burst.frames
        t_low, t_high = (2, max(MAX_PROFILE_FRAMES, t)) if dynamic_batch else (t, t)
        ranges.append((name, (low, t_low, 3, h, w), (1, t, 3, h, w), (high, t_high, 3, h, w)))
    return ranges


def optimisation_profile(config: ModelConfig, max_batch: int = DEFAULT_MAX_BATCH) -> dict[str, dict[str, list[int]]]:
    """The engine's optimisation profile per input, ``{name: {min, opt, max}}`` (for its sidecar)."""
    return {name: {"min": list(low), "opt": list(opt), "max": list(high)}
            for name, low, opt, high in _shape_ranges(config, max_batch)}


def onnx2trt(onnx_path: str | Path, engine_path: str | Path, config: ModelConfig, *,
             max_batch: int = DEFAULT_MAX_BATCH, workspace_gib: float = 2.0, dla_core: int | None = None) -> Path:
    """Build and serialize a TensorRT engine from the ONNX file (strongly typed on TensorRT ≥ 10)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0
    if major >= 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    else:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgeIQAError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    build = builder.create_builder_config()
    build.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if major < 10:  # weakly typed builds need the precisions allowed explicitly
        build.set_flag(trt.BuilderFlag.INT8)
        build.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, low, opt, high in _shape_ranges(config, max_batch, dynamic_batch=dla_core is None):
        profile.set_shape(name, low, opt, high)
    build.add_optimization_profile(profile)
    if dla_core is not None:
        build.default_device_type = trt.DeviceType.DLA
        build.DLA_core = dla_core
        build.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    serialized = builder.build_serialized_network(network, build)
    if serialized is None:
        raise EdgeIQAError(f"{onnx_path}: TensorRT failed to build an engine (see the TensorRT log above)")
    from edge_iqa.outputs import atomic_write

    # to a temporary name, then renamed: a killed build never leaves half an engine
    return atomic_write(engine_path, lambda handle: handle.write(bytes(serialized)), binary=True)


# --------------------------------------------------------------------------- without TensorRT


def trtexec_commands(onnx_name: str, engine_name: str, config: ModelConfig, *,
                     max_batch: int = DEFAULT_MAX_BATCH) -> dict[str, list[str]]:
    """The ``trtexec`` command lines (TensorRT 10, JetPack 6) for the GPU and for DLA core 0.

    The QDQ graph carries its own precisions, so the GPU build is strongly typed; DLA needs
    static shapes (batch 1) and falls back to the GPU for layers it cannot run.
    """
    def shapes(which: int, ranges) -> str:
        return ",".join(f"{name}:{'x'.join(str(d) for d in r[which])}" for name, *r in ranges)

    dynamic = _shape_ranges(config, max_batch, dynamic_batch=True)
    static = _shape_ranges(config, 1, dynamic_batch=False)
    gpu = ["trtexec", f"--onnx={onnx_name}", "--stronglyTyped", f"--saveEngine={engine_name}",
           f"--minShapes={shapes(0, dynamic)}", f"--optShapes={shapes(1, dynamic)}",
           f"--maxShapes={shapes(2, dynamic)}"]
    dla_engine = engine_name.replace(".plan", "_dla0.plan")
    dla = ["trtexec", f"--onnx={onnx_name}", "--stronglyTyped", "--useDLACore=0", "--allowGPUFallback",
           f"--saveEngine={dla_engine}", f"--shapes={shapes(1, static)}"]
    return {"gpu": gpu, "dla": dla}


def write_build_script(path: str | Path, onnx_name: str, engine_name: str, config: ModelConfig, *,
                       precision: str, rules_ok: bool) -> Path:
    """``build_engine.sh``: the exact trtexec commands to run on the Jetson (TensorRT 10)."""
    cmds = trtexec_commands(onnx_name, engine_name, config)
    quote = lambda argv: " \\\n      ".join(shlex.quote(a) for a in argv)  # noqa: E731
    verdict = "passed" if rules_ok else "FAILED (see export.json; expect trtexec to reject it)"
    burst = "" if config.burst is None else (
        f"# Burst graph: inputs (B, T, 3, H, W), frame 0 the reference; output scores (B, "
        f"{len(config.burst.tasks)} tasks: {', '.join(config.burst.tasks)}, T).\n"
        f"# Profile: B 1..{DEFAULT_MAX_BATCH}, T 2..{max(MAX_PROFILE_FRAMES, config.burst.frames)} "
        f"(optimised at T = {config.burst.frames}); DLA: static 1 x {config.burst.frames} frames.\n")
    text = f"""#!/usr/bin/env bash
# Build the TensorRT engine of {config.name} ({precision}) on the target (JetPack 6 / TensorRT 10).
# Written by `edge-iqa export --format tensorrt`; the ONNX graph {onnx_name}
# {verdict} edge-iqa's TensorRT rule check (QDQ rules, operator support).
{burst}# Usage: ./build_engine.sh [gpu|dla]   (default gpu). Keep {Path(engine_name).name}.json next to
# the engine: it carries the model config and preprocessing for `edge-iqa score`.
set -euo pipefail
cd "$(dirname "$0")"
case "${{1:-gpu}}" in
  gpu)
    {quote(cmds['gpu'])}
    ;;
  dla)
    # DLA (Orin): static shapes, batch 1; layers DLA cannot run fall back to the GPU.
    {quote(cmds['dla'])}
    ;;
  *) echo "usage: $0 [gpu|dla]" >&2; exit 2 ;;
esac
"""
    path = Path(path)
    path.write_text(text)
    path.chmod(0o755)
    return path


def write_sidecar(engine_path: str | Path, metadata: dict[str, str]) -> Path:
    """``<engine>.json``: the metadata an engine file cannot hold (config, preprocessing, export)."""
    sidecar = Path(str(engine_path) + ".json")
    sidecar.write_text(json.dumps({k: json.loads(v) for k, v in metadata.items()}, indent=2, sort_keys=True) + "\n")
    return sidecar
