"""AdaRound: learn whether each INT8 weight rounds up or down, layer by layer, on calibration images.

Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization", ICML 2020.
Rounding each weight to its nearest grid point minimises each weight's own error, not the
error of the layer's output; choosing floor or ceil per weight so that the layer reproduces its
FP32 output on real inputs recovers much of what rounding loses. Per layer, with the per-channel
scale ``s`` fixed and ``W̃ = s·clamp(floor(W/s) + h(V), -Qp, Qp)``, ``h`` the rectified sigmoid:

    min_V  ‖W̃ x̂ − W x‖²  +  λ Σ (1 − |2h(V) − 1|^β)

``x`` is the layer's input in the FP32 model, ``x̂`` in the model whose earlier layers are already
rounded (the paper's asymmetric reconstruction: each layer also absorbs the error before it); β
anneals from 20 to 2 after a warm-up without the regulariser, which then drives every ``h`` to 0
or 1. The weights are set to ``s·q`` afterwards: points of the grid the exporter computes.

The grid is exactly the one the target's own weight quantizer computes (:class:`Grid`), so the
exporter's round-to-nearest gives back the integers chosen here: ONNX Runtime's ``quantize_static``
and TensorRT's Q/DQ weights are symmetric per output channel, ``s = max|w| / Qp`` with Qp = 64
for the CPU flavour's 7-bit weights and 127 otherwise; coremltools' W8A8 ``LinearQuantizer`` is
affine per output channel (torch.ao's min/max observer: ``s = (max(w,0) − min(w,0)) / 255``, zero
point ``−128 − round(min(w,0)/s)``). The elements that set ``s`` (and the zero point) keep their
values, so the quantizer computes the same grid from the rounded weights (:func:`check_on_grid`
checks an ONNX graph).

Memory: a layer's inputs are cached for its images in both models, which at 720×1280 is 88 MB per
image for one MobileNetV2 expansion layer. Each layer caches as many of the calibration images as
fit ``AdaRoundConfig.cache_mb`` (at least one), and the capturing forward passes stop at the layer
they capture. BatchNorm is folded first (:mod:`export.fold`): the folded weights are
what the INT8 graph holds.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_iqa.errors import EdgeIQAError

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (the paper's values)


@dataclass(frozen=True)
class AdaRoundConfig:
    """How the weights were rounded; stored in the artifact's metadata."""

    iterations: int = 400  # Adam steps per layer
    batch_images: int = 4  # images of the cached inputs per step (and per capturing forward)
    images: int = 32  # calibration images whose layer inputs are cached
    cache_mb: int = 512  # at most this much of one layer's cache (inputs, targets); a larger layer caches fewer images
    lr: float = 1e-2
    reg_weight: float = 0.01  # λ
    beta: tuple[float, float] = (20.0, 2.0)
    warmup: float = 0.2  # share of the steps without the regulariser
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_images < 1 or self.images < 1 or self.cache_mb < 1 or not self.lr > 0:
            raise EdgeIQAError("adaround needs iterations, batch_images, images and cache_mb >= 1 and lr > 0")


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


@dataclass(frozen=True)
class Grid:
    """The int8 levels a target's weight quantizer gives each output channel (axis 0) of a weight."""

    qmin: int
    qmax: int
    symmetric: bool  # scale max|w| / qmax, zero point 0; else affine from the channel's min and max

    def params(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel scale and zero point, shaped to broadcast against ``weight``."""
        flat = weight.detach().flatten(1)
        shape = (-1, *([1] * (weight.dim() - 1)))
        if self.symmetric:
            scale = flat.abs().amax(1).clamp_min(1e-12) / self.qmax
            zero = torch.zeros_like(scale)
        else:  # torch.ao's per-channel affine min/max observer (what coremltools' LinearQuantizer uses)
            low, high = flat.amin(1).clamp(max=0), flat.amax(1).clamp(min=0)
            scale = ((high - low) / (self.qmax - self.qmin)).clamp_min(torch.finfo(torch.float32).eps)
            zero = torch.clamp(self.qmin - torch.round(low / scale), self.qmin, self.qmax)
        return scale.view(shape), zero.view(shape)

    def integers(self, weight: torch.Tensor) -> torch.Tensor:
        """The levels the target's quantizer rounds ``weight`` to (nearest)."""
        scale, zero = self.params(weight)
        return torch.clamp(torch.round(weight / scale) + zero, self.qmin, self.qmax)

    def pinned(self, weight: torch.Tensor) -> torch.Tensor:
        """The elements whose values set the scale and zero point: they keep their values."""
        flat = weight.detach().flatten(1)
        if self.symmetric:
            hit = flat.abs() == flat.abs().amax(1, keepdim=True)
        else:
            hit = (flat == flat.amin(1, keepdim=True)) | (flat == flat.amax(1, keepdim=True))
        return hit.view_as(weight)

    def nearest(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight`` rounded to its nearest levels, the pinned elements as they are: the target's own
        rounding of it gives the same integers."""
        scale, zero = self.params(weight)
        return torch.where(self.pinned(weight), weight, (self.integers(weight) - zero) * scale)


def symmetric_grid(qmax: int) -> Grid:
    """ONNX Runtime's and TensorRT's weight grid: symmetric, |q| <= qmax (64: ORT's 7-bit reduce_range)."""
    return Grid(-qmax, qmax, True)


COREML_GRID = Grid(-128, 127, False)  # coremltools' W8A8 LinearQuantizer, quantization_scheme="affine"


class _Rounding(nn.Module):
    """The soft rounding of one weight: ``floor(W/s + z) + h(V)``, V started at the fractional part."""

    def __init__(self, weight: torch.Tensor, grid: Grid):
        super().__init__()
        self.grid = grid
        scale, zero = grid.params(weight)
        self.register_buffer("scale", scale)
        self.register_buffer("zero", zero)
        scaled = weight.detach() / scale + zero
        self.register_buffer("floor", torch.floor(scaled))
        rest = (scaled - self.floor).clamp(1e-4, 1 - 1e-4)
        self.v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))
        self.register_buffer("pinned", grid.pinned(weight).float())
        self.register_buffer("original", weight.detach().clone())
        self.register_buffer("pinned_rounded", (grid.integers(weight) - zero) * scale)  # what the target makes of them

    def _value(self, q: torch.Tensor) -> torch.Tensor:
        return (torch.clamp(q, self.grid.qmin, self.grid.qmax) - self.zero) * self.scale

    def soft(self) -> torch.Tensor:
        return self.pinned * self.pinned_rounded + (1 - self.pinned) * self._value(self.floor + rectified_sigmoid(self.v))

    def hard_integers(self) -> torch.Tensor:
        return torch.clamp(self.floor + (self.v >= 0).float(), self.grid.qmin, self.grid.qmax)

    def hard(self) -> torch.Tensor:
        """The weight to write: the learned levels, the pinned elements as they were."""
        return self.pinned * self.original + (1 - self.pinned) * self._value(self.hard_integers())

    def regulariser(self, beta: float) -> torch.Tensor:
        h = rectified_sigmoid(self.v)
        return (1 - (2 * h - 1).abs().pow(beta)).sum()


def _layer_output(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The layer's output with ``weight`` in place of its own (its own forward: timm's same-padding convs too)."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, module.bias)
    return torch.func.functional_call(module, {"weight": weight, "bias": module.bias}, (x,))


class _Captured(Exception):
    """Stops a forward pass once the layer being captured has its input: nothing after it is needed."""


def _capture_inputs(model: nn.Module, module: nn.Module, batches: Sequence[tuple[torch.Tensor, ...]],
                    images: int, chunk: int) -> torch.Tensor:
    """The input of ``module`` (its first call per forward) on the first ``images`` images of
    ``batches``, forwarded ``chunk`` images at a time and only as far as ``module``."""
    seen: list[torch.Tensor] = []

    def hook(_, args):
        seen.append(args[0].detach())
        raise _Captured

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for batch in _chunks(batches, images, chunk):
                try:
                    model(*batch)
                except _Captured:
                    pass
    finally:
        handle.remove()
    return torch.cat(seen)


def _chunks(batches: Sequence[tuple[torch.Tensor, ...]], images: int, chunk: int) -> Iterable[tuple[torch.Tensor, ...]]:
    """The first ``images`` images of ``batches`` as batches of at most ``chunk`` images."""
    done = 0
    for batch in batches:
        for start in range(0, batch[0].shape[0], chunk):
            if done >= images:
                return
            part = tuple(t[start:start + min(chunk, images - done)] for t in batch)
            done += part[0].shape[0]
            yield part


def _bytes_per_image(model: nn.Module, layers: Sequence[tuple[str, nn.Module]], batch: tuple[torch.Tensor, ...]
                     ) -> dict[str, int]:
    """Bytes one image takes in each layer's cache: its input twice (FP32 and rounded model) and its
    output twice (the target and one output beside it), from one forward of one image."""
    sizes: dict[str, int] = {}
    handles = []
    for name, module in layers:
        def hook(_, args, out, name=name):
            sizes.setdefault(name, 2 * (args[0].numel() * args[0].element_size() + out.numel() * out.element_size()))
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(*(t[:1] for t in batch))
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def cached_images(bytes_per_image: int, cfg: AdaRoundConfig, available: int) -> int:
    """How many images a layer caches: ``cfg.images`` (or all there are) within ``cfg.cache_mb``, at least one.
    A high-resolution layer's few images still hold hundreds of thousands of output positions."""
    within = (cfg.cache_mb << 20) // max(bytes_per_image, 1)
    return max(1, min(cfg.images, available, within))


def _reconstruct(module: nn.Module, grid: Grid, fp_input: torch.Tensor, q_input: torch.Tensor,
                 cfg: AdaRoundConfig, generator: torch.Generator) -> dict[str, float]:
    """Learn the rounding of one layer; set its weight to the chosen grid points. Returns its record."""
    weight = module.weight.detach().clone()
    with torch.no_grad():
        target = _layer_output(module, fp_input, weight)
        nearest_error = float(F.mse_loss(_layer_output(module, q_input, grid.nearest(weight)), target))
    rounding = _Rounding(weight, grid)
    optimizer = torch.optim.Adam([rounding.v], lr=cfg.lr)
    n = fp_input.shape[0]
    warm = int(cfg.warmup * cfg.iterations)
    for step in range(cfg.iterations):
        pick = torch.randint(0, n, (min(cfg.batch_images, n),), generator=generator)
        out = _layer_output(module, q_input[pick], rounding.soft())
        loss = (out - target[pick]).pow(2).sum(1).mean()  # over channels, then positions and images (BRECQ's)
        if step >= warm:
            progress = (step - warm) / max(cfg.iterations - warm, 1)
            beta = cfg.beta[1] + 0.5 * (cfg.beta[0] - cfg.beta[1]) * (1 + np.cos(progress * np.pi))
            loss = loss + cfg.reg_weight * rounding.regulariser(beta)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        module.weight.copy_(rounding.hard())
        error = float(F.mse_loss(_layer_output(module, q_input, module.weight), target))
        free = rounding.pinned == 0
        changed = float(((rounding.hard_integers() != grid.integers(weight)) & free).float().mean())
    return {"mse_nearest": nearest_error, "mse_adaround": error, "flipped": changed}


def adaround(model: nn.Module, batches: Iterable[tuple[torch.Tensor, ...]], grid: Grid,
             cfg: AdaRoundConfig = AdaRoundConfig(), progress: Callable[[str, dict], None] | None = None,
             ) -> tuple[nn.Module, list[dict]]:
    """A copy of the BatchNorm-folded ``model`` whose conv/linear weights lie on their INT8 ``grid``,
    each layer's rounding learned in execution order; and a record per layer.

    ``batches``: calibration inputs (tuples of view tensors). Each layer caches at most ``cfg.images`` of
    them, fewer where their inputs and outputs would pass ``cfg.cache_mb`` (:func:`cached_images`).
    A layer whose nearest rounding reconstructs no worse keeps it (AdaRound never makes a layer worse
    on the calibration images).
    """
    from export.qat import weighted_layers

    batches = _first_images(batches, cfg.images)
    if not batches:
        raise EdgeIQAError("adaround: no calibration image could be decoded")
    reference = model.eval()
    rounded = copy.deepcopy(model).eval()
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    fp_layers = dict(weighted_layers(reference, batches[0]))
    layers = weighted_layers(rounded, batches[0])
    sizes = _bytes_per_image(rounded, layers, batches[0])
    available = sum(b[0].shape[0] for b in batches)
    records = []
    for name, module in layers:
        start = time.perf_counter()
        images = cached_images(sizes[name], cfg, available)
        fp_input = _capture_inputs(reference, fp_layers[name], batches, images, cfg.batch_images)
        q_input = _capture_inputs(rounded, module, batches, images, cfg.batch_images)
        captured = time.perf_counter() - start
        before = module.weight.detach().clone()
        record = _reconstruct(module, grid, fp_input, q_input, cfg, generator)
        if record["mse_adaround"] > record["mse_nearest"]:
            with torch.no_grad():
                module.weight.copy_(grid.nearest(before))
            record["kept"] = "nearest"
        else:
            record["kept"] = "adaround"
        record.update(layer=name, images=images, capture_seconds=round(captured, 2),
                      seconds=round(time.perf_counter() - start, 2))
        records.append(record)
        if progress:
            progress(name, record)
    for p in rounded.parameters():
        p.requires_grad_(False)
    return rounded, records


def _first_images(batches: Iterable[tuple[torch.Tensor, ...]], limit: int) -> list[tuple[torch.Tensor, ...]]:
    kept, count = [], 0
    for batch in batches:
        if count >= limit:
            break
        take = min(limit - count, batch[0].shape[0])
        kept.append(tuple(t[:take] for t in batch))
        count += take
    return kept


def check_on_grid(onnx_path, grid: Grid, rtol: float = 1e-5) -> None:
    """Raise unless every Conv/Gemm weight of the FP32 graph lies on its own per-channel ``grid``: then the
    quantizer, rounding to nearest, keeps the integers AdaRound chose."""
    import onnx
    from onnx import numpy_helper

    from export.qat import _stores_transposed, weighted_nodes

    graph = onnx.load(str(onnx_path)).graph
    inits = {t.name: t for t in graph.initializer}
    for node in weighted_nodes(graph):
        weight = numpy_helper.to_array(inits[node.input[1]])
        weight = torch.from_numpy(np.ascontiguousarray(weight.T if _stores_transposed(node) else weight))
        scale, zero = grid.params(weight)
        back = (grid.integers(weight) - zero) * scale
        if not torch.allclose(back, weight, rtol=0, atol=rtol * float(weight.abs().max())):
            raise EdgeIQAError(f"adaround: the weights of {node.name} are off their INT8 grid; "
                               "the quantizer would round them again")


def summary(cfg: AdaRoundConfig, grid: Grid, records: list[dict]) -> dict:
    """What goes into the artifact's metadata: the settings and how much the reconstruction error fell."""
    nearest = sum(r["mse_nearest"] for r in records)
    learned = sum(r["mse_adaround"] if r["kept"] == "adaround" else r["mse_nearest"] for r in records)
    return {"config": asdict(cfg), "grid": asdict(grid), "layers": len(records),
            "layers_kept_nearest": sum(r["kept"] == "nearest" for r in records),
            "sum_mse_nearest": nearest, "sum_mse_adaround": learned,
            "fewest_images": min((r["images"] for r in records), default=0),
            "capture_seconds": round(sum(r["capture_seconds"] for r in records), 1),
            "seconds": round(sum(r["seconds"] for r in records), 1)}
