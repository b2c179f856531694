"""PyTorch → CoreML ML Program packages (``.mlpackage``): FP16, and INT8 as W8 or W8A8.

- ``fp16`` / ``fp32``: ``torch.jit.trace`` → ``coremltools.convert(convert_to="mlprogram")``
  (TorchScript tracing is coremltools' stable path; torch.export is beta).
- ``w8``: the FP16 program with weights linearly quantized to int8, symmetric, per output
  channel (``coremltools.optimize.coreml.linear_quantize_weights``; data-free, runs on Linux).
- ``int8`` (W8A8): weights and activations in int8. Activation ranges must come from real
  images; ``optimize.coreml.linear_quantize_activations`` calibrates by predicting (macOS
  only), so on every platform we calibrate the PyTorch model with
  ``coremltools.optimize.torch.quantization.LinearQuantizer`` (observers only, no training)
  before tracing. BatchNorm is folded first (see :mod:`export.fold`).

Inputs are ``ImageType`` with scale 1/255 and zero bias, so an app hands over pixels; the model
normalises inside. The model config, preprocessing and export settings go into the package's
user-defined metadata. Prediction needs macOS; on Linux :func:`readback_model` reads the
package's (possibly compressed) weights back into the PyTorch model so they can be checked.

A burst model (converted as :class:`edge_iqa.burst_model.AllTaskScores`, the burst graph
contract) takes (B, T, 3, H, W) float RGB [0, 1] per view: an ``ImageType`` cannot be 5-D, so
its inputs are ``TensorType`` with flexible B (1 to :data:`MAX_BURST_BATCH`) and T (2 to
:data:`MAX_BURST_FRAMES`), and its output ``scores`` is (B, n_tasks, T). W8A8 calibration traces
the model with torch.fx, which cannot trace the burst head's per-scale splits: the relation head
and its scale norm (:data:`BURST_FLOAT_MODULES`, a few small linear layers) stay in float, the
backbone, where the MACs are, is calibrated to int8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.model import IQAModel, example_inputs
from edge_iqa.runtimes.coreml import coreml_runtime_available, read_coreml_metadata  # noqa: F401  (runner: runtimes)
from edge_iqa.runtimes.coreml import quiet_coremltools as _quiet
from edge_iqa.outputs import atomic_path
from export.metadata import artifact_metadata, input_names, output_name

COREML_PRECISIONS = ("fp32", "fp16", "w8", "int8")
MAX_FULL_SIDE = 8192  # flexible input range of ``full`` views
MAX_VIEWS = 4
MAX_BURST_BATCH = 64
MAX_BURST_FRAMES = 64
BURST_FLOAT_MODULES = ("scale_norm", "head")  # of BurstIQAModel; not traceable by torch.fx


def torch2coreml(model: IQAModel, path: str | Path, *, precision: str = "fp16",
                 calib: Iterable[Sequence[torch.Tensor]] | None = None,
                 export: Mapping[str, Any] | None = None, calibrated: nn.Module | None = None) -> Path:
    """Convert ``model`` to the ML Program package ``path`` (``.mlpackage``).

    ``calib``: batches of view tensors (real images, views as at inference) for ``int8``
    (W8A8); or ``calibrated``: the result of :func:`calibrate_w8a8` when the caller already
    calibrated. ``export``: extra JSON metadata stored with the config.
    """
    if precision not in COREML_PRECISIONS:
        raise EdgeIQAError(f"CoreML precision {precision!r} is not one of {', '.join(COREML_PRECISIONS)}")
    config: ModelConfig = model.config
    model = model.float().cpu().eval()
    net: nn.Module = model
    settings: dict[str, Any] = {"format": "coreml", "precision": precision}
    if precision == "int8":
        if calibrated is None and calib is None:
            raise EdgeIQAError("CoreML int8 (W8A8) needs calibration images; pass --calib DATA")
        net = calibrated if calibrated is not None else calibrate_w8a8(model, calib)[0]
        settings.update(int8="W8A8: int8 weights (per channel) and uint8 activations with zero points (per tensor)",
                        calibration="coremltools.optimize.torch LinearQuantizer, affine, observers only (no training)")
    elif precision == "w8":
        settings.update(int8="W8: int8 weights (symmetric, per channel), FP16 activations")
    mlmodel = _convert(net, config, precision)
    if precision == "w8":
        mlmodel = _quantize_weights(mlmodel)
    if config.burst is None:
        shapes = {"input_type": "ImageType RGB, scale 1/255, bias 0 (feed 8-bit pixels)", "batch": 1}
    else:
        shapes = {"input_type": "TensorType float32 (B, T, 3, H, W), RGB in [0, 1], frame 0 the reference",
              "batch": f"flexible, 1..{MAX_BURST_BATCH}", "frames": f"flexible, 2..{MAX_BURST_FRAMES}",
              "tasks": list(config.burst.tasks), "output": {"scores": ["batch", "tasks", "frames"]}}
        if precision == "int8":
            shapes["float_modules"] = [f"{m} (torch.fx cannot trace it; stays float)" for m in BURST_FLOAT_MODULES]
    settings.update({"coremltools": _version("coremltools"), "minimum_deployment_target": _target_name(precision),
                     **shapes, **dict(export or {})})
    _describe(mlmodel, config, artifact_metadata(config, settings))
    path = Path(path)
    with atomic_path(path) as tmp, _quiet():  # a package folder written aside, then renamed into place
        mlmodel.save(str(tmp))
    return path


def _version(dist: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(dist)


def _target(precision: str):
    import coremltools as ct

    # W8A8 needs iOS 17's quantize/dequantize ops; everything else runs from iOS 16.
    return ct.target.iOS17 if precision == "int8" else ct.target.iOS16


def _target_name(precision: str) -> str:
    return "iOS17" if precision == "int8" else "iOS16"


class _Views1(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, view0):
        return self.model(view0)


class _Views2(_Views1):
    def forward(self, view0, view1):
        return self.model(view0, view1)


class _Views3(_Views1):
    def forward(self, view0, view1, view2):
        return self.model(view0, view1, view2)


class _Views4(_Views1):
    def forward(self, view0, view1, view2, view3):
        return self.model(view0, view1, view2, view3)


def fixed_arity(model: nn.Module, n_views: int) -> nn.Module:
    """``model`` behind a ``forward(view0, …)`` of fixed arity: torch.fx cannot trace ``*views``."""
    if not 1 <= n_views <= MAX_VIEWS:
        raise EdgeIQAError(f"CoreML export supports 1 to {MAX_VIEWS} views, the model has {n_views}")
    return (_Views1, _Views2, _Views3, _Views4)[n_views - 1](model).eval()


def calibrate_w8a8(model: IQAModel, calib: Iterable[Sequence[torch.Tensor]], *, method: str = "minmax",
                   percentile: float = 99.999, bins: int = 4096,
                   float_modules: Sequence[str] = ()) -> tuple[nn.Module, int]:
    """The model with fake-quantized int8 weights and activations, ranges observed on ``calib``;
    ``float_modules`` (module names of ``model``, :mod:`export.float_modules`) stay in float.

    coremltools' LinearQuantizer with the affine scheme: activations are uint8 with a zero point
    (a hard-swish output spans about [-0.4, 300]; symmetric int8 would spend half its levels on
    the negative side), weights int8 per output channel. Its min/max observers watch the float
    model (fake quant off), as ONNX Runtime's calibrators do. ``method="quantile"`` then narrows
    each activation range in a second pass to its own [q(100 - p), q(p)], read from a ``bins``-bin
    histogram (:func:`export.quantize.tail_range`, as the ONNX path's ``quantile``). ``finalize``
    computes scales and zero points from the observers' ranges. Returns the model and the batch count.
    """
    from torch.ao.quantization import disable_observer, enable_fake_quant

    from export.formats import get_format

    methods = [m for m in get_format("coreml").calib_methods if m != "auto"]  # auto: export.pipeline._choose_w8a8
    if method not in methods:
        raise EdgeIQAError(f"CoreML int8 calibrates with {' or '.join(methods)}, not {method!r}")
    batches = list(calib)  # quantile needs a second pass
    if not batches:
        raise EdgeIQAError("no calibration batch for CoreML int8; the calibration split is empty")
    quantizer, prepared = prepare_w8a8(model, "min_max", float_modules)
    with torch.no_grad():
        for views in batches:
            prepared(*views)
    if method == "quantile":
        _narrow_to_quantiles(prepared, batches, percentile, bins)
    prepared.apply(disable_observer)
    prepared.apply(enable_fake_quant)
    return finalize_w8a8(quantizer, prepared, model.config), len(batches)


def prepare_w8a8(model: nn.Module, activation_observer: str = "min_max",
                 float_modules: Sequence[str] = ()) -> tuple[Any, nn.Module]:
    """coremltools' ``LinearQuantizer`` (affine: int8 per-channel weights, uint8 activations with zero
    points) and its prepared copy of ``model`` (BatchNorm folded, eval), observers on, fake quant off.

    ``activation_observer``: ``min_max`` for calibration, ``moving_average_min_max`` for QAT
    (:func:`export.qat.coreml_qat_export`). Observers are on from step 0 and never frozen by the
    quantizer's schedule. ``model``: an :class:`IQAModel`, or a burst model's
    :class:`~edge_iqa.burst_model.AllTaskScores`, whose relation head and scale norm
    (:data:`BURST_FLOAT_MODULES`) torch.fx cannot trace and so stay in float. ``float_modules``: module
    names of a photo model left unquantized (``--float-layer``); CoreML runs them in FP16.
    """
    from coremltools.optimize.torch.quantization import (
        LinearQuantizer, LinearQuantizerConfig, ModuleLinearQuantizerConfig,
    )
    from torch.ao.quantization import disable_fake_quant

    from export.fold import fold_batchnorm

    example = example_inputs(model.config, batch=1)
    folded = fixed_arity(fold_batchnorm(model, example), len(model.config.views))
    # fixed_arity(...).model is the model; a burst model is AllTaskScores(...), whose .model is BurstIQAModel
    untraceable = [f"model.model.{m}" for m in BURST_FLOAT_MODULES] if model.config.burst is not None else []
    config = LinearQuantizerConfig(global_config=ModuleLinearQuantizerConfig(
        quantization_scheme="affine", weight_per_channel=True, weight_observer="min_max",
        activation_observer=activation_observer, milestones=[0, 0, 10**9, 0]),
        module_name_configs={m: None for m in [*untraceable, *(f"model.{m}" for m in float_modules)]},
        non_traceable_module_names=untraceable)
    quantizer = LinearQuantizer(folded, config)
    with _quiet():
        prepared = quantizer.prepare(example_inputs=example, inplace=False)
    quantizer.step()
    prepared.eval()  # observers observe in eval mode too; eval keeps dropout out of the ranges
    prepared.apply(disable_fake_quant)
    return quantizer, prepared


def finalize_w8a8(quantizer, prepared: nn.Module, config: ModelConfig) -> nn.Module:
    """The W8A8 net ``torch2coreml`` converts: ``quantizer.finalize`` of ``prepared`` (its observers'
    ranges become scales and zero points), a burst model's float modules made plain again."""
    with _quiet():
        final = quantizer.finalize(prepared, inplace=False)
    if config.burst is not None:
        _float_linears(final, [f"model.model.{m}" for m in BURST_FLOAT_MODULES])
    return final.eval()


def _float_linears(net: nn.Module, prefixes: Sequence[str]) -> None:
    """Plain float ``nn.Linear`` for the QAT linears the quantizer swapped into the non-traceable
    modules (it swaps them although it leaves those modules unquantized; their fake-quants have
    no observer, so they could neither run nor be traced)."""
    for name, module in list(net.named_modules()):
        if hasattr(module, "weight_fake_quant") and isinstance(module, nn.Linear) \
                and any(name.startswith(p + ".") for p in prefixes):
            plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            with torch.no_grad():
                plain.weight.copy_(module.weight)
                if module.bias is not None:
                    plain.bias.copy_(module.bias)
            parent, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent), child, plain)


def _activation_fake_quants(prepared: nn.Module) -> list[nn.Module]:
    """Each activation FakeQuantize whose range a per-tensor min/max observer sets (not the fixed
    ranges coremltools gives hard-sigmoid outputs, not weights)."""
    from torch.ao.quantization import FakeQuantize, MinMaxObserver

    found: dict[int, nn.Module] = {}
    for name, module in prepared.named_modules(remove_duplicate=False):
        if (isinstance(module, FakeQuantize) and not name.endswith("weight_fake_quant")
                and type(module.activation_post_process) is MinMaxObserver):
            found.setdefault(id(module), module)
    return list(found.values())


def _narrow_to_quantiles(prepared: nn.Module, batches: Sequence[Sequence[torch.Tensor]], percentile: float,
                         bins: int) -> None:
    """Second float pass: each activation observer's range becomes its own tail quantiles."""
    from torch.ao.quantization import disable_observer

    from export.quantize import tail_range

    fake_quants = _activation_fake_quants(prepared)
    spans = [(float(fq.activation_post_process.min_val), float(fq.activation_post_process.max_val))
             for fq in fake_quants]
    spans = [(low, max(high, low + 1e-12)) for low, high in spans]  # a constant tensor: one bin
    counts = [torch.zeros(bins, dtype=torch.float64) for _ in fake_quants]

    def recorder(i: int):
        def hook(module, args):
            counts[i] += torch.histc(args[0].detach().float(), bins, *spans[i]).double()
        return hook

    prepared.apply(disable_observer)
    handles = [fq.register_forward_pre_hook(recorder(i)) for i, fq in enumerate(fake_quants)]
    try:
        with torch.no_grad():
            for views in batches:
                prepared(*views)
    finally:
        for handle in handles:
            handle.remove()
    for fq, count, (low, high) in zip(fake_quants, counts, spans):
        lo, hi = tail_range(count.numpy(), low, high, percentile)
        fq.activation_post_process.min_val.copy_(torch.tensor(lo))
        fq.activation_post_process.max_val.copy_(torch.tensor(hi))


def _image_inputs(config: ModelConfig):
    import coremltools as ct

    if config.burst is not None:
        return _burst_inputs(config)
    names, shapes = input_names(config), []
    for view, example in zip(config.views, example_inputs(config)):
        if view.kind == "full":
            h, w = example.shape[2:]
            shapes.append(ct.Shape(shape=(1, 3, ct.RangeDim(32, MAX_FULL_SIDE, default=int(h)),
                                          ct.RangeDim(32, MAX_FULL_SIDE, default=int(w)))))
        else:
            shapes.append(tuple(example.shape))
    return [ct.ImageType(name=name, shape=shape, scale=1 / 255.0, bias=[0.0, 0.0, 0.0],
                         color_layout=ct.colorlayout.RGB) for name, shape in zip(names, shapes)]


def _burst_inputs(config: ModelConfig):
    """5-D float inputs with flexible batch and frames (an ImageType is one 2-D image)."""
    import coremltools as ct

    inputs = []
    for name, view, example in zip(input_names(config), config.views, example_inputs(config)):
        h, w = (int(d) for d in example.shape[-2:])
        spatial = ((ct.RangeDim(32, MAX_FULL_SIDE, default=h), ct.RangeDim(32, MAX_FULL_SIDE, default=w))
                   if view.kind == "full" else (h, w))
        shape = ct.Shape(shape=(ct.RangeDim(1, MAX_BURST_BATCH, default=1),
                                ct.RangeDim(2, MAX_BURST_FRAMES, default=config.burst.frames), 3, *spatial))
        inputs.append(ct.TensorType(name=name, shape=shape, dtype=np.float32))
    return inputs


def _convert(net: nn.Module, config: ModelConfig, precision: str):
    import coremltools as ct

    example = example_inputs(config, batch=1)
    wrapped = net if isinstance(net, torch.fx.GraphModule) else fixed_arity(net, len(config.views))
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(wrapped, example)
        try:
            return ct.convert(
                traced, inputs=_image_inputs(config), outputs=[ct.TensorType(name=output_name(config))],
                convert_to="mlprogram", minimum_deployment_target=_target(precision),
                compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
            )
        except Exception as err:  # coremltools raises bare ValueErrors/RuntimeErrors for unsupported ops
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise EdgeIQAError(f"CoreML conversion of {config.name!r} failed: {first}") from err


def _quantize_weights(mlmodel):
    import coremltools.optimize.coreml as cto

    op_config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                            weight_threshold=0)
    with _quiet():
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config))


def _describe(mlmodel, config: ModelConfig, metadata: Mapping[str, str]) -> None:
    mlmodel.user_defined_metadata.update(metadata)
    mlmodel.author = "edge-iqa"
    low, high = config.score_range
    if config.burst is not None:
        mlmodel.short_description = (f"edge-iqa {config.name}: a quality score for every frame of a burst against "
                                     "its reference (frame 0), higher is better")
        for name, view in zip(input_names(config), config.views):
            mlmodel.input_description[name] = (f"(B, T, 3, H, W) float RGB in [0, 1]: view {view.spec()} of each "
                                               "frame, the reference first (see edge_iqa.preprocessing)")
        mlmodel.output_description["scores"] = (f"(B, tasks, T) scores in [{low}, {high}], task rows "
                                                f"{', '.join(config.burst.tasks)}; frame 0's is meaningless")
        return
    mlmodel.short_description = f"edge-iqa {config.name}: no-reference image quality, higher is better"
    for name, view in zip(input_names(config), config.views):
        mlmodel.input_description[name] = f"RGB image, view {view.spec()} of the photo (see edge_iqa.preprocessing)"
    mlmodel.output_description["score"] = f"quality score in [{low}, {high}], higher is better"


# --------------------------------------------------------------------------- reading back


def load_program(path: str | Path):
    """The MIL program of a saved package, weights read from the package's weight file."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

    path = Path(path)
    with _quiet():
        spec = ct.utils.load_spec(str(path))
        weights = path / "Data" / "com.apple.CoreML" / "weights"
        return load_milproto(spec, spec.specificationVersion, str(weights))


def program_weights(program) -> list[dict[str, Any]]:
    """For each conv/linear op in program order: its weight and bias (dequantized, float32)."""
    layers = []
    for op in program.functions["main"].operations:
        if op.op_type not in ("conv", "linear"):
            continue
        weight, compressed = _const_value(op.weight)
        bias = _const_value(op.bias)[0] if op.bias is not None else None
        layers.append({"op": op.op_type, "name": op.name, "weight": weight, "bias": bias, "int8": compressed})
    return layers


def _const_value(var) -> tuple[np.ndarray, bool]:
    """A constant (or a constexpr dequantize of int8 data) as float32, and whether it was int8."""
    op = var.op
    if op is None or op.op_type == "const":
        return np.asarray(var.val, dtype=np.float32), False
    if op.op_type.startswith("constexpr_"):
        return np.asarray(op.materialized_val_inference(), dtype=np.float32), True
    if op.op_type == "dequantize":  # W8A8 programs: dequantize(const int8 data)
        data = np.asarray(op.input.val, dtype=np.float32)
        scale = np.asarray(op.scale.val, dtype=np.float32)
        zero = np.asarray(op.zero_point.val, dtype=np.float32) if op.zero_point is not None else 0.0
        axis = op.axis.val if op.axis is not None else None
        if axis is not None and np.ndim(scale) == 1:
            shape = [1] * data.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
        return (data - zero) * scale, True
    if op.op_type == "cast":
        return _const_value(op.x)
    raise EdgeIQAError(f"CoreML weight {var.name} comes from a {op.op_type} op; cannot read it back")


def readback_model(model: IQAModel, path: str | Path, *, into: nn.Module | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A PyTorch model carrying the package's weights, and a report on them.

    CoreML folds BatchNorm into the convs and drops the PyTorch names, so the package's
    conv/linear layers are matched, in execution order and by shape, to those of the
    BatchNorm-folded model (or of ``into``: the calibrated W8A8 model that was converted).
    The report gives the layer count, how many were stored as int8, and the worst per-layer
    weight SQNR (dB) of the package against the PyTorch weights it was made from.
    """
    from export.fold import execution_order, fold_batchnorm

    example = example_inputs(model.config, batch=1)
    net = into if into is not None else fold_batchnorm(model.float().cpu().eval(), example)
    layers = [(name, m) for name, m, _, _ in execution_order(net, example) if isinstance(m, (nn.Conv2d, nn.Linear))]
    stored = program_weights(load_program(path))
    if len(layers) != len(stored):
        raise EdgeIQAError(f"{path}: {len(stored)} conv/linear layers in the package but {len(layers)} in PyTorch; "
                           "cannot read the weights back")
    sqnrs = []
    with torch.no_grad():
        for (name, module), layer in zip(layers, stored):
            if layer["weight"].size != module.weight.numel():
                raise EdgeIQAError(f"{path}: layer {layer['name']} has shape {layer['weight'].shape}, PyTorch {name} "
                                   f"has {tuple(module.weight.shape)}; cannot read the weights back")
            weight = torch.from_numpy(layer["weight"]).reshape(module.weight.shape)
            sqnrs.append(sqnr_db(module.weight, weight))
            module.weight.copy_(weight)
            if layer["bias"] is not None:
                module.bias = nn.Parameter(torch.from_numpy(layer["bias"]).reshape(-1).clone())
    report = {"layers": len(stored), "int8_layers": sum(bool(layer["int8"]) for layer in stored),
              "min_weight_sqnr_db": float(min(sqnrs)) if sqnrs else None}
    return net.eval(), report


def round_activations_to_fp16(net: nn.Module) -> nn.Module:
    """Round every leaf module's output to FP16, approximating FP16 compute in FP32.

    PyTorch's FP16 kernels on CPU are orders of magnitude slower than FP32, so CoreML's FP16
    execution is simulated by storing each layer's output at FP16 precision.
    """
    def hook(module, args, output):
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            return output.half().float()
        return output

    for module in net.modules():
        if not list(module.children()):
            module.register_forward_hook(hook)
    return net


def coreml_macs(path: str | Path) -> int | None:
    """Conv and linear MACs of a package's program (same convention as the PyTorch count);
    None when an input has a flexible shape."""
    total = 0
    for op in load_program(path).functions["main"].operations:
        if op.op_type not in ("conv", "linear"):
            continue
        out_shape = op.outputs[0].shape
        if any(not isinstance(d, (int, np.integer)) for d in out_shape):
            return None
        weight_shape = op.weight.shape
        per_output = int(np.prod(weight_shape[1:])) if op.op_type == "conv" else int(weight_shape[-1])
        total += int(np.prod(out_shape)) * per_output
    return total


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio of ``test`` against ``reference`` in dB."""
    ref = reference.detach().double()
    noise = (ref - test.detach().double()).pow(2).sum()
    if float(noise) == 0.0:
        return float("inf")
    return float(10 * torch.log10(ref.pow(2).sum() / noise))
