"""Quantization-aware fine-tuning (QAT): train through the target's own INT8 rounding, export with the learned ranges.

Post-training quantization rounds a model that never saw rounding; QAT fine-tunes it through
fake quantization (quantize then dequantize in float, straight-through gradients; Jacob et al.,
"Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference",
CVPR 2018) so the weights adapt to the grid the deployed graph uses. Here:

1. BatchNorm is folded into the convs (:mod:`export.fold`): the folded weights are what the
   INT8 graph quantizes.
2. The FP32 graph is calibrated as ``edge-iqa export`` would (PTQ, ``calib_method``), and those
   ranges initialise one fake-quant per Conv/Gemm input. ONNX node *i* and PyTorch conv *i* are
   matched in execution order and checked by weight shape.
3. A few epochs on the training split with the distillation loss ``kd_mse`` against the FP32
   model itself (its scores are the teacher's; labels are not needed).
4. Export: the fine-tuned FP32 model to ONNX, PTQ ranges for every tensor of that graph, then the
   learned range on every Conv/Gemm input, and :func:`export.quantize.quantize_onnx` /
   :func:`export.quantize.quantize_for_cpu` with that cache: the same quantizer and layout as
   PTQ, so QAT and PTQ artifacts differ only in weights and ranges.
5. Epoch selection (``select_split``, default ``val``): the state before fine-tuning (the PTQ
   start) and the state after each epoch are each made into that INT8 artifact, scored against
   FP32 on the held-out split by the metric ``--calib-method auto`` ranks with
   (:class:`export.quantize.SelectionSplit`), and the best is exported, the start winning ties.
   kd_mse on the training images is not what parity measures: on three distilled seeds the last
   epoch's artifact lost to PTQ (``--calib-method auto``) on 5 of 9 seed × target pairs (the
   ``int8_seeds`` benchmark before selection), so QAT never exports a state that its selection
   split rates below the one it started from.

The fake quant reproduces each target's scheme (the grids of ONNX Runtime's ``compute_scale_zp``):

- ``onnx`` (ONNX Runtime U8S8): activations uint8 [0, 255] with a zero point, weights int8
  symmetric per output channel in 7 bits ([-64, 64], ``reduce_range``: same scores with and
  without VNNI, see :mod:`export.quantize`), or 8 with ``cpu_weight_bits=8`` ([-127, 127]). ONNX Runtime also quantizes the tensors between the
  convs that are not conv inputs (conv outputs before their activation, SE internals); those keep
  their PTQ ranges of the fine-tuned graph.
- ``tensorrt`` (symmetric S8S8, Q/DQ on Conv/Gemm inputs only): activations int8 [-127, 127]
  and weights int8 [-127, 127], zero points 0. The fake quant sits exactly where the graph has
  its Q/DQ pairs, so nothing is left to PTQ.

A burst model (:mod:`edge_iqa.burst_model`) is fine-tuned and matched through
:class:`~edge_iqa.burst_model.AllTaskScores`, the module its graph is exported from: every task's
scores on whole training bursts. Only what :func:`write_weights` puts back into the graph is
trained (conv/linear weights and the biases their nodes hold; LayerNorms stay as they are), two
linears that read one tensor share its fake quant, and the attention's activation × activation
MatMuls, which belong to no module, keep their PTQ ranges. For CoreML the relation head and scale norm stay
in float, as in the burst model's PTQ package (:mod:`export.coreml`).

Activation step sizes are learned with LSQ (Esser et al., "Learned Step Size Quantization",
ICLR 2020: gradient through the rounding, scaled by 1/sqrt(N·Qp)); zero points stay at their PTQ
values; weight scales follow the weights (max |w| per channel / Qp, which is what the quantizer
computes when it exports them).

Framework, on the evidence of this environment (chosen under torch 2.14 and coremltools 9.0, without
torchao or NVIDIA ModelOpt; torch 2.15 with executorch's torchao changes none of it, and
``torch.ao.quantization`` is deprecated in favour of torchao):
PT2E/FX and ModelOpt place quantizers by their own rules and export their own Q/DQ graphs, so
their learned ranges have no one-to-one tensor in the graphs ``quantize_static`` builds for ONNX
Runtime and TensorRT (and PT2E's are not the U8S8-with-7-bit-weights grid). What QAT must match
is the deployed graph, and it is small enough to write: one module per quantizer below.

CoreML W8A8 is the other way round: its converter takes the model that coremltools' own
``coremltools.optimize.torch`` ``LinearQuantizer`` prepares (what :func:`export.coreml.calibrate_w8a8`
calibrates with), so QAT for CoreML is that quantizer in training mode, its scheme exactly: int8
per-channel weights, uint8 affine activations. Its activation observers are moving-average
min/max (torch.ao's QAT recipe, Krishnamoorthi, "Quantizing deep convolutional networks for
efficient inference", 2018): they start from the calibration images with fake quant off (the
PTQ ranges), keep tracking the fine-tuned activations while fake quant is on, and are frozen
before ``finalize``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from edge_iqa.burst_model import SPREAD_EPS
from edge_iqa.errors import EdgeIQAError
from export.formats import CPU_WEIGHT_BITS, QAT_FORMATS, QAT_SELECT_SPLITS

QAT_CONFIG_VERSION = 2  # 2: select_split (1: always the last epoch)
# (activation qmin, qmax, symmetric), weight qmax: ONNX Runtime's grids for each flavour
SCHEMES = {"onnx": ((0, 255, False), 64), "tensorrt": ((-127, 127, True), 127)}


def scheme(fmt: str, weight_bits: int = 7) -> tuple[tuple[int, int, bool], int]:
    """(activation qmin, qmax, symmetric), weight qmax of ``fmt``; 8-bit CPU weights span [-127, 127]."""
    activations, weight_qmax = SCHEMES[fmt]
    return activations, (127 if fmt == "onnx" and weight_bits == 8 else weight_qmax)


@dataclass(frozen=True)
class QATConfig:
    """How a QAT artifact was made; stored in ``qat.json`` and the artifact's metadata."""

    format: str = "onnx"
    epochs: int = 2
    lr: float = 1e-4
    batch_size: int = 16
    seed: int = 0
    calib_method: str = "minmax"
    percentile: float = 99.999
    calib_images: int = 256
    max_images: int = 0  # training images per epoch (0: the whole train split)
    select_split: str = "val"  # the split that picks the exported epoch (or the PTQ start); none: the last
    cpu_weight_bits: int = 7  # format onnx: 7 (same scores on every x86 CPU) or 8 (ExportConfig.cpu_weight_bits)
    version: int = QAT_CONFIG_VERSION

    def __post_init__(self) -> None:
        if self.format not in QAT_FORMATS:
            raise EdgeIQAError(f"qat --format {self.format}: QAT exports {', '.join(QAT_FORMATS)}")
        if self.format == "coreml" and self.calib_method != "minmax":
            raise EdgeIQAError("qat --format coreml starts from coremltools' moving-average min/max observers; "
                               "leave --calib-method at minmax")
        if self.calib_method not in ("minmax", "percentile", "entropy", "quantile"):
            raise EdgeIQAError(f"qat --calib-method {self.calib_method}: the PTQ ranges QAT starts from come from "
                               "minmax, percentile, entropy or quantile")
        if self.cpu_weight_bits not in CPU_WEIGHT_BITS or (self.cpu_weight_bits == 8 and self.format != "onnx"):
            raise EdgeIQAError("qat --cpu-weight-bits is 7 or 8, and 8 only with --format onnx")
        if self.select_split not in QAT_SELECT_SPLITS:
            raise EdgeIQAError(f"qat --select-split {self.select_split}: one of {', '.join(QAT_SELECT_SPLITS)}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or self.max_images < 0:
            raise EdgeIQAError("qat needs --epochs >= 1, --batch-size >= 1, --lr > 0 and --max-images >= 0")


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


class ActivationFakeQuant(nn.Module):
    """Per-tensor fake quant with a learned step size (LSQ) and a fixed zero point, from a PTQ range."""

    def __init__(self, low: float, high: float, qmin: int, qmax: int, symmetric: bool):
        super().__init__()
        low, high = min(low, 0.0), max(high, 0.0)
        if symmetric:
            scale, zero = 2 * max(abs(low), abs(high)) / (qmax - qmin), 0.0
        else:
            scale = (high - low) / (qmax - qmin)
            zero = float(np.clip(round(qmin - low / scale), qmin, qmax)) if scale > 0 else 0.0
        self.scale = nn.Parameter(torch.tensor(max(scale, 1e-8)))
        self.register_buffer("zero_point", torch.tensor(zero))
        self.qmin, self.qmax = qmin, qmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grad = 1.0 / math.sqrt(max(x[0].numel(), 1) * self.qmax)
        scale = self.scale.abs().clamp_min(1e-8)
        scale = (scale - scale * grad).detach() + scale * grad  # LSQ's gradient scale
        q = torch.clamp(_round_ste(x / scale) + self.zero_point, self.qmin, self.qmax)
        return (q - self.zero_point) * scale

    def learned_range(self) -> tuple[float, float]:
        """The [low, high] that makes ONNX Runtime's quantizer pick this scale and zero point."""
        scale, zero = float(self.scale.detach().abs()), float(self.zero_point)
        return (self.qmin - zero) * scale, (self.qmax - zero) * scale


class WeightFakeQuant(nn.Module):
    """Symmetric per-output-channel fake quant of a weight on [-qmax, qmax] (scale max |w| / qmax)."""

    def __init__(self, qmax: int):
        super().__init__()
        self.qmax = qmax

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        absmax = weight.detach().abs().flatten(1).amax(1).clamp_min(1e-12)
        scale = (absmax / self.qmax).view(-1, *([1] * (weight.dim() - 1)))
        return torch.clamp(_round_ste(weight / scale), -self.qmax, self.qmax) * scale


def weighted_layers(model: nn.Module, inputs: Sequence[torch.Tensor]) -> list[tuple[str, nn.Module]]:
    """Every Conv2d and Linear in the order a forward pass calls them (each once)."""
    from export.fold import execution_order

    seen: dict[int, tuple[str, nn.Module]] = {}
    for name, module, _, _ in execution_order(model, tuple(inputs)):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            seen.setdefault(id(module), (name, module))
    return list(seen.values())


def weighted_nodes(graph) -> list:
    """The Conv/Gemm/MatMul nodes of an ONNX graph whose second input is a weight (an initializer), in
    graph order: one per conv/linear module. A MatMul of two activations (a burst model's attention-weighted
    sum of scales) is no module's; it keeps its PTQ ranges."""
    from export.quantize import TENSORRT_QUANTIZED_OPS

    weights = {t.name for t in graph.initializer}
    return [n for n in graph.node if n.op_type in TENSORRT_QUANTIZED_OPS and len(n.input) > 1 and n.input[1] in weights]


def graph_weighted_inputs(onnx_path: str | Path) -> list[tuple[str, tuple[int, ...], bool]]:
    """(input tensor name, weight shape, whether the node holds the bias) of every :func:`weighted_nodes` node."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    return [(n.input[0], shapes[n.input[1]], len(n.input) > 2) for n in weighted_nodes(graph)]


def write_weights(onnx_path: Path, pairs: list[tuple[str, nn.Module, str]], out_path: Path) -> Path:
    """The ONNX graph with each matched Conv/Gemm's weight and bias replaced by its module's current ones.

    Every parameter of a BatchNorm-folded model lives in its convs and linears, so this is the
    fine-tuned graph without a second export.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(onnx_path))
    inits = {t.name: t for t in proto.graph.initializer}
    for node, (name, module, _) in zip(weighted_nodes(proto.graph), pairs):
        tensors = [(node.input[1], trained_weight(module))] + ([(node.input[2], module.bias)]
                                                      if len(node.input) > 2 and module.bias is not None else [])
        for i, (init_name, value) in enumerate(tensors):
            if init_name not in inits:
                raise EdgeIQAError(f"QAT: ONNX node {node.name} of layer {name} has no initializer {init_name}")
            old = inits[init_name]
            array = value.detach().cpu().numpy().astype(np.float32)
            if i == 0 and _stores_transposed(node):  # by the node, not the shape: a square weight fits both ways
                array = array.T
            if array.shape != tuple(old.dims):
                raise EdgeIQAError(f"QAT: layer {name} (weight {array.shape}) does not fit {init_name} {tuple(old.dims)}")
            old.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), init_name))
    from export.onnx import save_onnx

    return save_onnx(proto, out_path, node_scopes=True)  # atomic: a killed export leaves no half graph


def _stores_transposed(node) -> bool:
    """Whether a node holds a linear's (out, in) weight as (in, out): MatMul always, Gemm without transB."""
    if node.op_type == "MatMul":
        return True
    return node.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in node.attribute)


def trained_weight(module: nn.Module) -> torch.Tensor:
    """The weight a layer trains: under a fake-quant parametrization its latent original, not the rounded one
    (the quantizer rounds it again on export)."""
    from torch.nn.utils import parametrize

    return module.parametrizations.weight.original if parametrize.is_parametrized(module, "weight") else module.weight


def match_layers(layers: list[tuple[str, nn.Module]], graph_inputs: list[tuple[str, tuple[int, ...], bool]]
                 ) -> list[tuple[str, nn.Module, str]]:
    """(module name, module, ONNX input tensor) pairs; the i-th weighted layer of each, checked by shape."""
    if len(layers) != len(graph_inputs):
        raise EdgeIQAError(f"QAT: the model calls {len(layers)} conv/linear layers, its ONNX graph has "
                           f"{len(graph_inputs)} Conv/Gemm nodes; cannot match its quantizers")
    pairs = []
    for (name, module), (tensor, shape, _) in zip(layers, graph_inputs):
        own = tuple(module.weight.shape)
        if shape not in (own, own[::-1]):
            raise EdgeIQAError(f"QAT: layer {name} (weight {own}) does not match ONNX input {tensor} (weight {shape})")
        pairs.append((name, module, tensor))
    return pairs


def read_ranges(cache: Path) -> dict[str, tuple[float, float]]:
    def value(v):
        (number,) = np.asarray(v["data"] if isinstance(v, dict) else v, dtype=np.float64).ravel()
        return float(number)

    data = json.loads(Path(cache).read_text())["data"]
    return {name: (value(r["lowest"]), value(r["highest"])) for name, r in data.items()}


def write_learned_ranges(cache: Path, learned: dict[str, tuple[float, float]]) -> None:
    """Put the learned [low, high] of each tensor into an ONNX Runtime calibration cache (JSON)."""
    stored = json.loads(Path(cache).read_text())
    for name, (low, high) in learned.items():
        entry = dict(stored["data"].get(name, {"CLS": "TensorData"}))
        for key, v in (("lowest", low), ("highest", high)):
            entry[key] = {"data": [float(v)], "dtype": "float32", "CLS": "numpy.array"}
        stored["data"][name] = entry
    Path(cache).write_text(json.dumps(stored))


class FakeQuantized:
    """``model`` (BatchNorm folded) with a fake quant on every Conv/Gemm input and weight, initialised
    from the PTQ ranges in ``cache`` of the model's ONNX graph ``graph``. Layers that read one tensor
    share its fake quant, as the graph quantizes that tensor once."""

    def __init__(self, model: nn.Module, graph: Path, cache: Path, fmt: str, weight_bits: int = 7):
        from torch.nn.utils import parametrize

        from edge_iqa.model import example_inputs

        (act_qmin, act_qmax, symmetric), weight_qmax = scheme(fmt, weight_bits)
        ranges = read_ranges(cache)
        self.model = model
        inputs = graph_weighted_inputs(graph)
        self.pairs = match_layers(weighted_layers(model, example_inputs(model.config)), inputs)
        self.by_tensor: dict[str, ActivationFakeQuant] = {}
        self.handles = []
        # only what write_weights puts into the graph is trained: every weight, and the biases their nodes
        # hold (a linear on a 3-D input exports as MatMul + Add, its bias in the Add); LayerNorms stay
        written = {id(m.weight) for _, m, _ in self.pairs} | {
            id(m.bias) for (_, m, _), (_, _, holds_bias) in zip(self.pairs, inputs) if holds_bias and m.bias is not None}
        for parameter in model.parameters():
            parameter.requires_grad_(id(parameter) in written)
        for _, module, tensor in self.pairs:
            if tensor not in ranges:
                raise EdgeIQAError(f"QAT: the calibration has no range for ONNX tensor {tensor}")
            fq = self.by_tensor.get(tensor)
            if fq is None:
                fq = self.by_tensor[tensor] = ActivationFakeQuant(*ranges[tensor], act_qmin, act_qmax, symmetric)
            self.handles.append(module.register_forward_pre_hook(lambda m, args, fq=fq: (fq(args[0]), *args[1:])))
            parametrize.register_parametrization(module, "weight", WeightFakeQuant(weight_qmax))
        self.quantizers = nn.ModuleList(self.by_tensor.values())
        self.initial = self.learned_ranges()
        self._trained = nn.ModuleDict({"model": model, "quantizers": self.quantizers})

    def parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad] + list(self.quantizers.parameters())

    def state(self) -> dict[str, torch.Tensor]:
        """A copy of all that fine-tuning changes (latent weights, biases, step sizes), for :meth:`load_state`."""
        return _copied(self._trained.state_dict())

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._trained.load_state_dict(state)

    def learned_ranges(self) -> dict[str, tuple[float, float]]:
        return {t: q.learned_range() for t, q in self.by_tensor.items()}

    def release(self) -> nn.Module:
        """The fine-tuned float model, fake quant removed (its latent weights; the quantizer re-rounds them)."""
        from torch.nn.utils import parametrize

        for handle in self.handles:
            handle.remove()
        for _, module, _ in self.pairs:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        return self.model


def _copied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def finetune(fake: FakeQuantized, teacher: nn.Module, paths: Sequence, qat: QATConfig,
             progress=None, after_epoch=None) -> list[dict[str, float]]:
    """``qat.epochs`` epochs of kd_mse (score units of the range) between the fake-quant model and ``teacher``,
    on photo paths or (burst models, their every-task scores) bursts.
    ``after_epoch(entry)`` is called after each epoch with its history entry (to keep the state)."""
    from distill.losses import LossInputs, get_loss
    from export.quantize import view_batches

    config = teacher.config
    low, span = config.score_range[0], config.score_range[1] - config.score_range[0]
    loss_fn = get_loss("kd_mse")
    optimizer = torch.optim.Adam(fake.parameters(), lr=qat.lr)
    rng = np.random.default_rng(qat.seed)
    torch.manual_seed(qat.seed)
    history = []
    fake.model.eval()  # no BatchNorm left; dropout off, so the fake-quant model sees what it will run
    for epoch in range(qat.epochs):
        order = [paths[i] for i in rng.permutation(len(paths))][: qat.max_images or None]
        total, batches, start = 0.0, 0, time.perf_counter()
        for views, _ in view_batches(order, config, qat.batch_size):
            tensors = [torch.from_numpy(v) for v in views]
            with torch.no_grad():
                target = (teacher(*tensors) - low) / span
            pred = (fake.model(*tensors) - low) / span
            loss = loss_fn(LossInputs(pred=pred, target=target, teacher_pred=target))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches = total + float(loss.detach()), batches + 1
        if batches == 0:
            raise EdgeIQAError("QAT: no training image could be decoded")
        history.append({"epoch": epoch + 1, "kd_mse": total / batches, "batches": batches,
                        "seconds": round(time.perf_counter() - start, 2)})
        if after_epoch:
            after_epoch(history[-1])
        if progress:
            progress(history[-1])
    return history


def selection_split(config, data: str | Path, qat: QATConfig):
    """The :class:`export.quantize.SelectionSplit` that picks the exported epoch, or None (``select_split`` none)."""
    from export.quantize import SelectionSplit

    return None if qat.select_split == "none" else SelectionSplit(config, data, qat.select_split)


def pick_epoch(selection, epochs: list[int], figures: list[dict[str, float]]) -> tuple[int, dict[str, Any]]:
    """The index of the best candidate by Spearman vs FP32, then the smaller SRCC drop, then the earlier epoch
    (epoch 0, the PTQ start, wins a tie), and the record of all of them."""
    from export.quantize import best_figure

    rows = [{"epoch": e, **f} for e, f in zip(epochs, figures)]
    best = best_figure(rows)
    return best, {"split": selection.split, "n": selection.count, "metric": selection.metric,
                  "chosen_epoch": epochs[best], "candidates": rows}


def qat_export(model: nn.Module, data: str | Path, out: str | Path, qat: QATConfig, *, progress=None,
               ptq_beside: bool = True):
    """Fine-tune ``model`` with fake quant for ``qat.format``, export it with the learned ranges into ``out``.

    Returns the :class:`export.pipeline.Artifact` (scored by ONNX Runtime; for TensorRT the QDQ
    graph stands in for the engine, as in ``edge-iqa export``; CoreML as ``edge-iqa export`` checks
    it) and the QAT record; ``artifact.ptq`` is the PTQ artifact beside it (or None).
    ``ptq_beside``: also write ``out/ptq/``, the PTQ graph QAT started from (same graph, same
    calibration cache, same quantizer), to compare with.
    """
    import tempfile

    from edge_iqa.model import example_inputs
    from export.calibration import calibrate
    from export.fold import fold_batchnorm
    from export.onnx import torch2onnx
    from export.quantize import calibration_reader

    burst = model.config.burst is not None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if qat.format == "coreml":
        return coreml_qat_export(model, data, out, qat, progress=progress, ptq_beside=ptq_beside)
    teacher = model.float().cpu().eval()
    if burst:  # trained and matched on what the graph outputs: every task's (B, n_tasks, T) scores
        from edge_iqa.burst_model import AllTaskScores

        teacher = AllTaskScores(teacher).eval()
    student = fold_batchnorm(copy.deepcopy(teacher), example_inputs(teacher.config))
    train = _training_items(data, teacher.config)
    selection = selection_split(teacher.config, data, qat)  # before any work: a missing split fails at once
    reader = calibration_reader(teacher.config, data, "train", qat.calib_images)  # as edge-iqa export reads it
    with tempfile.TemporaryDirectory(prefix="edge-iqa-qat-") as tmp:
        graph = torch2onnx(student, Path(tmp) / "fp32.onnx", node_scopes=True)
        ptq_cache = calibrate(graph, reader, out / "calibration_ptq.json", method=qat.calib_method,
                              percentile=qat.percentile)
        ptq = _quantize(graph, out / "ptq", ptq_cache, qat) if ptq_beside else None
        fake = FakeQuantized(student, graph, ptq_cache, qat.format, qat.cpu_weight_bits)
        states = [(0, fake.state())] if selection else []
        history = finetune(fake, teacher, train, qat, progress,
                           after_epoch=(lambda e: states.append((e["epoch"], fake.state()))) if selection else None)
        states = states or [(qat.epochs, fake.state())]
        candidates = []  # (tuned FP32 graph, INT8 graph, its cache) of each state
        for epoch, state in states:
            fake.load_state(state)
            folder = Path(tmp) / f"epoch{epoch}"
            folder.mkdir()
            tuned_graph = write_weights(graph, fake.pairs, folder / "fp32.onnx")
            candidates.append((tuned_graph, *_int8_graph(tuned_graph, ptq_cache, reader, folder, qat,
                                                          fake.learned_ranges(), recalibrate=epoch > 0)))
        best, chosen = 0, None
        if selection:
            best, chosen = pick_epoch(selection, [e for e, _ in states],
                                      selection.measure(graph, [int8 for _, int8, _ in candidates]))
        fake.load_state(states[best][1])
        learned, initial = fake.learned_ranges(), fake.initial
        tuned = fake.release()
        tuned_graph, int8, cache = candidates[best]
        check_same_scores(tuned, tuned_graph)
        record = {"qat_config": asdict(qat), "epochs": history, "selection": chosen, "quantizers": len(learned),
                  "train_images": len(train), "calib_images": reader.images,
                  "ranges_moved": _range_moves(initial, learned), "loss": "kd_mse against the FP32 model's scores",
                  "ptq_beside": str(ptq) if ptq else None}
        artifact = _export_tuned(tuned, tuned_graph, int8, cache, reader, out, qat, record)
    artifact.ptq = as_artifact(ptq, teacher.config, qat, [ptq], {}) if ptq else None
    return artifact, record


def _training_items(data: str | Path, config) -> list:
    """The train split: image paths, or bursts for a burst model."""
    if config.burst is not None:
        from export.burst import read_bursts

        items = read_bursts(data, "train")
    else:
        from edge_iqa.data.manifest import read_manifest

        items = [r.path for r in read_manifest(data, split="train")]
    if not items:
        raise EdgeIQAError(f"{data}: no train split to fine-tune on")
    return items


def check_same_scores(model: nn.Module, graph: Path, atol: float = 1e-4) -> None:
    """Raise unless the ONNX ``graph`` (weights written by :func:`write_weights`) scores as ``model`` does."""
    from edge_iqa.model import example_inputs
    from edge_iqa.runtimes.onnxruntime import onnx_session
    from export.metadata import input_names

    inputs = example_inputs(model.config, batch=2)
    session = onnx_session(graph)
    got = session.run(None, {n: t.numpy() for n, t in zip(input_names(model.config), inputs)})[0]
    with torch.no_grad():
        worst = float(np.abs(got - model(*inputs).numpy()).max())
    if not worst <= atol:
        raise EdgeIQAError(f"the weights written into the ONNX graph change its scores by {worst:.2e}")


def _quantize(fp32: Path, folder: Path, cache: Path, qat: QATConfig) -> Path:
    """The INT8 graph of ``fp32`` with the ranges of ``cache``: quantize_for_cpu (QOperator) or TensorRT's QDQ."""
    from export.quantize import quantize_for_cpu, quantize_onnx

    folder.mkdir(parents=True, exist_ok=True)
    if qat.format == "onnx":
        path, _ = quantize_for_cpu(fp32, folder / "model_int8.onnx", None, None, layout="qoperator",
                                   method=qat.calib_method, percentile=qat.percentile, cache=cache,
                                   weight_bits=qat.cpu_weight_bits)
        return path
    return quantize_onnx(fp32, folder / "model_int8_qdq.onnx", None, flavour="tensorrt", method=qat.calib_method,
                         percentile=qat.percentile, cache=cache)


def _range_moves(initial: dict, learned: dict) -> dict[str, float]:
    ratios = [(h1 - l1) / (h0 - l0) for (l0, h0), (l1, h1) in ((initial[t], learned[t]) for t in initial) if h0 > l0]
    return {"min_width_ratio": float(min(ratios)), "median_width_ratio": float(np.median(ratios)),
            "max_width_ratio": float(max(ratios))} if ratios else {}


def _int8_graph(fp32: Path, ptq_cache: Path, reader, folder: Path, qat: QATConfig, learned: dict,
                *, recalibrate: bool) -> tuple[Path, Path]:
    """The INT8 graph of one fine-tuned state and its cache: the learned ranges on the Conv/Gemm inputs and,
    for the tensors ONNX Runtime also quantizes between them, PTQ ranges of this graph (``recalibrate``; the
    PTQ start's own graph keeps ``ptq_cache``). TensorRT's graph quantizes only the learned tensors."""
    import shutil

    from export.calibration import calibrate

    cache = folder / "calibration_qat.json"
    if recalibrate and qat.format == "onnx":
        calibrate(fp32, reader, cache, method=qat.calib_method, percentile=qat.percentile)
    else:
        shutil.copyfile(ptq_cache, cache)
    missing = set(learned) - set(read_ranges(cache))
    if missing:
        raise EdgeIQAError(f"QAT: the fine-tuned graph lacks tensors {sorted(missing)[:3]}")
    write_learned_ranges(cache, learned)
    return _quantize(fp32, folder / "int8", cache, qat), cache


def _export_tuned(tuned: nn.Module, fp32: Path, int8: Path, cache: Path, reader, out: Path, qat: QATConfig,
                  record: dict[str, Any]):
    """The chosen INT8 graph and its cache moved into ``out``, with the QAT record in its metadata."""
    import shutil

    from export.metadata import file_size
    from export.quantize import carry_metadata

    path = Path(shutil.move(str(int8), str(out / int8.name)))
    cache = Path(shutil.move(str(cache), str(out / cache.name)))
    carry_metadata(path, path, {"qat": {k: v for k, v in record.items() if k != "epochs"},
                                 "calib_images": reader.images})
    return as_artifact(path, tuned.config, qat, [path, cache], {"fp32_onnx_bytes": file_size(fp32), "qat": record})


def as_artifact(path: Path, config, qat: QATConfig, files: list[Path], info: dict[str, Any]):
    """An INT8 graph of :func:`qat_export` as an :class:`export.pipeline.Artifact` that ONNX Runtime scores."""
    from edge_iqa.runtimes import load_artifact
    from export.formats import ExportConfig
    from export.parity import RAN, SIMULATED, Check
    from export.pipeline import Artifact

    export = ExportConfig(format=qat.format, precision="int8", calib_method=qat.calib_method,
                          calib_images=qat.calib_images, percentile=qat.percentile, cpu_layout="qoperator",
                          cpu_weight_bits=qat.cpu_weight_bits)
    info = {"int8_flavour": "cpu" if qat.format == "onnx" else "tensorrt",
            "int8_layout": {"chosen": "qoperator" if qat.format == "onnx" else "qdq"}, **info}
    runner = load_artifact(path, "onnxruntime").batch_fn
    if qat.format == "tensorrt":
        from export.tensorrt import check_tensorrt_graph

        rules = check_tensorrt_graph(path, expect_int8=True)
        checks = [Check("tensorrt_rules", RAN, rules.ok, rules.to_dict(), "QDQ rules checked on the ONNX graph")]
        return Artifact(export, config, path, files, runner, SIMULATED,
                        f"ONNX Runtime on {path.name}, the QDQ graph TensorRT builds from (trtexec --onnx)",
                        graph=path, checks=checks, info=info)
    return Artifact(export, config, path, files, runner, RAN, "ONNX Runtime (CPUExecutionProvider)", graph=path,
                    info=info)


def coreml_qat_export(model: nn.Module, data: str | Path, out: Path, qat: QATConfig, *, progress=None,
                      ptq_beside: bool = True):
    """CoreML W8A8 QAT with coremltools' LinearQuantizer (see the module doc); the package is built by
    :func:`export.pipeline.build_coreml` from the fine-tuned, finalized net. ``ptq_beside``: also the
    PTQ package of the same observers before fine-tuning, in ``out/ptq``. A burst model is fine-tuned as
    its :class:`~edge_iqa.burst_model.AllTaskScores` on whole training bursts, the relation head in float
    as in its PTQ export (:data:`export.coreml.BURST_FLOAT_MODULES`)."""
    from torch.ao.quantization import disable_observer, enable_fake_quant

    from export.burst import module_batch_fn
    from export.coreml import finalize_w8a8, prepare_w8a8
    from export.formats import ExportConfig
    from export.pipeline import _calib_tensors, build_coreml

    teacher = model.float().cpu().eval()
    config = teacher.config
    if config.burst is not None:  # what the package computes: every task's (B, n_tasks, T) scores
        from edge_iqa.burst_model import AllTaskScores

        net = AllTaskScores(teacher).eval()
    else:
        net = teacher
    export = ExportConfig(format="coreml", precision="int8", calib_images=qat.calib_images)
    selection = selection_split(config, data, qat)  # before any work: a missing split fails at once
    train = _training_items(data, config)
    batches = list(_calib_tensors(config, export, data))
    quantizer, prepared = prepare_w8a8(net, "moving_average_min_max")
    with torch.no_grad():
        for views in batches:  # the PTQ ranges: observers on the float model
            prepared(*views)
    meta = {"export_config": export.to_dict(), "command": ""}
    ptq = None
    if ptq_beside:
        frozen = copy.deepcopy(prepared)
        frozen.apply(disable_observer), frozen.apply(enable_fake_quant)
        ptq = build_coreml(teacher, export, out / "ptq", None, meta, calibrated=finalize_w8a8(quantizer, frozen, config))
    prepared.apply(enable_fake_quant)  # observers stay on: they track the fine-tuned activations
    restore = bound_sqrt_gradients(prepared)
    trainable = _Trainable(_PreparedNet(prepared, config))
    states = [(0, trainable.state())] if selection else []
    history = finetune(trainable, net, train, qat, progress,
                       after_epoch=(lambda e: states.append((e["epoch"], trainable.state()))) if selection else None)
    chosen = None
    if selection:  # each state as the fake-quant net coremltools finalizes (what the CoreML check simulates)
        runners = [module_batch_fn(net)] + [_frozen_runner(trainable.model, state) for _, state in states]
        best, chosen = pick_epoch(selection, [e for e, _ in states], selection.measure_batch_fns(runners))
        trainable.load_state(states[best][1])
    restore()
    prepared.apply(disable_observer), prepared.apply(enable_fake_quant)
    final = finalize_w8a8(quantizer, prepared, config)
    record = {"qat_config": asdict(qat), "epochs": history, "selection": chosen, "train_images": len(train),
              "calib_images": sum(int(np.prod(b[0].shape[:-3])) for b in batches),  # frames for bursts
              "loss": "kd_mse against the FP32 model's scores" + (" (every task)" if config.burst else ""),
              "scheme": "coremltools LinearQuantizer: int8 per-channel weights, uint8 affine activations, "
                        "moving-average min/max observers from the PTQ pass, on during fine-tuning"
                        + ("; the burst relation head and scale norm in float" if config.burst else ""),
              "ptq_beside": str(ptq.path) if ptq else None}
    meta["qat"] = {k: v for k, v in record.items() if k != "epochs"}
    artifact = build_coreml(teacher, export, out, None, meta, calibrated=final)
    artifact.info["qat"] = record
    artifact.ptq = ptq
    return artifact, record


class _SqrtBoundedGradient(torch.autograd.Function):
    """``torch.sqrt`` whose gradient is at most that of the float model's ``sqrt(v + 1e-6)`` at v = 0."""

    @staticmethod
    def forward(ctx, x):
        y = torch.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * 0.5 / y.clamp_min(math.sqrt(SPREAD_EPS))


def _sqrt_bounded_gradient(x: torch.Tensor) -> torch.Tensor:
    return _SqrtBoundedGradient.apply(x)


def bound_sqrt_gradients(prepared: nn.Module):
    """Give every ``torch.sqrt`` of the fx graph ``prepared`` a bounded gradient; returns the undo.

    A burst model's spread is ``sqrt(variance + 1e-6)`` (:func:`edge_iqa.burst_model.mean_and_spread`), and
    coremltools fake-quantizes the sum before the root: a small variance rounds to exactly 0, where the
    root's gradient is infinite, and one such value makes every weight's gradient NaN. The forward stays
    ``torch.sqrt``; the backward is bounded by the float model's own (0.5 / sqrt(1e-6)). Undone before
    ``finalize``, so the converted net holds plain ``torch.sqrt``."""
    nodes = [n for n in prepared.graph.nodes if n.op == "call_function" and n.target is torch.sqrt]
    for node in nodes:
        node.target = _sqrt_bounded_gradient
    prepared.recompile()

    def undo() -> None:
        for node in nodes:
            node.target = torch.sqrt
        prepared.recompile()

    return undo


def _frozen_runner(net: nn.Module, state: dict[str, torch.Tensor]):
    """A batch function of a copy of ``net`` (a prepared net) in ``state``, observers frozen, fake quant on."""
    from torch.ao.quantization import disable_observer, enable_fake_quant

    from export.burst import module_batch_fn

    net = copy.deepcopy(net)
    net.load_state_dict(state)
    net.apply(disable_observer), net.apply(enable_fake_quant)
    return module_batch_fn(net)


class _PreparedNet(nn.Module):
    """The prepared (fake-quant) fx graph behind ``forward(*views)``, with the config finetune reads."""

    def __init__(self, prepared: nn.Module, config):
        super().__init__()
        self.prepared, self.config = prepared, config

    def forward(self, *views):
        return self.prepared(*views)


class _Trainable:
    """What :func:`finetune` needs of a fake-quant model: ``model`` and ``parameters()``."""

    def __init__(self, model: nn.Module):
        self.model = model

    def parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def state(self) -> dict[str, torch.Tensor]:
        """Weights, observer statistics and fake-quant scales (see :meth:`FakeQuantized.state`)."""
        return _copied(self.model.state_dict())

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
