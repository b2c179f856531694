"""Work that is not a multiply-accumulate: BatchNorm, activations, elementwise ops, pooling.

Papers' MAC figures leave this out and so does the budget (see :mod:`profiling.macs`), but
on a phone or a Jetson it is not free: HardSwish, SE gating and depthwise layers are
memory-bound. It is reported on its own line, counted from the aten ops of one forward
pass (a ``TorchDispatchMode``, so it works on the ``meta`` device):

- ``batch_norm``: elements produced by batch-norm ops (one multiply-add each once folded);
- ``activation``: elements produced by activation functions (ReLU, HardSwish, Sigmoid, ...);
- ``elementwise``: elements produced by other pointwise ops (add, mul, div: residuals, SE
  scaling, input normalisation);
- ``pooling``: elements read by pooling and reductions (avg/max pool, mean, sum);
- ``resampling``: elements produced by upsampling.

Counts are element operations, not MACs. Ops that only move or reshape data (view, cat,
clone, ...) are not counted; their names are kept in ``uncounted`` so nothing is hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

OTHER_OP_KINDS = ("batch_norm", "activation", "elementwise", "pooling", "resampling")
_ACTIVATIONS = frozenset({
    "relu", "relu6", "hardswish", "hardsigmoid", "hardtanh", "sigmoid", "silu", "gelu", "tanh",
    "leaky_relu", "elu", "selu", "celu", "mish", "softplus", "prelu", "_prelu_kernel", "threshold",
    "clamp_min", "log_sigmoid_forward", "softmax", "_softmax", "log_softmax", "_log_softmax",
})
_POOLING = frozenset({
    "avg_pool2d", "max_pool2d", "max_pool2d_with_indices", "adaptive_avg_pool2d", "_adaptive_avg_pool2d",
    "adaptive_max_pool2d", "avg_pool1d", "avg_pool3d", "max_pool3d_with_indices", "mean", "sum", "amax", "amin",
})


@dataclass(frozen=True)
class OtherOps:
    """Element operations by kind (see the module docstring), and the ops left uncounted."""

    counts: dict[str, int]
    uncounted: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _kind(func) -> str | None:
    if func.overloadpacket in flop_registry:  # MACs: counted by profiling.macs
        return None
    name = func.overloadpacket.__name__.rstrip("_")  # relu_ is relu done in place
    if "batch_norm" in name:
        return "batch_norm"
    if name in _ACTIVATIONS:
        return "activation"
    if name in _POOLING:
        return "pooling"
    if name.startswith(("upsample", "_upsample")):
        return "resampling"
    if torch.Tag.pointwise in func.tags:
        return "elementwise"
    return "uncounted"


class _OpTally(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts = dict.fromkeys(OTHER_OP_KINDS, 0)
        self.uncounted: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        kind = _kind(func)
        if kind == "uncounted":
            self.uncounted.add(func.overloadpacket.__name__)
        elif kind == "pooling":
            self.counts[kind] += args[0].numel()
        elif kind is not None:
            first = next(t for t in tree_leaves(out) if isinstance(t, torch.Tensor))
            self.counts[kind] += first.numel()
        return out


def count_other_ops(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> OtherOps:
    """Non-MAC element operations of ``model(*inputs)``, one forward under ``no_grad``."""
    tally = _OpTally()
    with torch.no_grad(), tally:
        model(*inputs)
    return OtherOps(counts=tally.counts, uncounted=tuple(sorted(tally.uncounted)))
